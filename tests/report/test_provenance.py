"""What made an artefact: its runs' machines, commits and dates in its own files and on the page, and a warning
where runs of two machines or commits sit side by side."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from resrepro.analysis.aggregate import Run
from resrepro.report.gallery import build_report
from resrepro.report.provenance import made_by, made_by_lines
from resrepro.train.provenance import cpu_model, provenance

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"


def run(path: str, cpu: str, sha: str, date: str) -> Run:
    origin = {"cpu": cpu, "device": "x86_64 (2 threads)", "git_sha": sha, "torch": "2.14.1", "date": date}
    return Run(Path(path), {"model": "resnet20", "dataset": "digits"},
               {"status": "finished", "final": {"eval_error": 0.1}, "provenance": origin})


def test_a_run_records_its_cpu_date_and_command():
    p = provenance(torch.device("cpu"))
    assert p["cpu"] == cpu_model() and p["cpu"] not in ("", "unknown CPU")
    assert p["date"][:4].isdigit() and p["date"].endswith("+00:00")  # UTC, ISO 8601
    assert p["command"].split()[0] in ("resrepro", "pytest", "python", "python3", "-m")


def test_runs_of_two_machines_say_so():
    runs = [run("a", "AMD EPYC 7B13", "abc", "2026-12-05T10:00:00+00:00"),
            run("b", "AMD EPYC 7B13", "abc", "2026-12-06T10:00:00+00:00"),
            run("c", "Intel Xeon Platinum 8481C", "abc", "2026-12-06T11:00:00+00:00")]
    made = made_by(runs)
    assert [(m["cpu"], m["runs"], m["dates"]) for m in made] == [
        ("AMD EPYC 7B13", 2, ["2026-12-05", "2026-12-06"]), ("Intel Xeon Platinum 8481C", 1, ["2026-12-06"])]
    lines = made_by_lines(made)
    assert lines[0] == ("Runs made on: AMD EPYC 7B13; x86_64 (2 threads); torch 2.14.1; commit `abc`; 2026-12-05 "
                        "to 2026-12-06 (2 runs).")
    assert "2 different machines or commits" in lines[-1]
    assert len(made_by_lines(made_by(runs[:2]))) == 1  # one machine: no warning


def test_artefacts_of_one_group_made_on_two_machines_say_so_side_by_side(tmp_path):
    runs = tmp_path / "runs" / "cifar10" / "tiny"
    shutil.copytree(FIXTURES / "cifar10" / "tiny", runs)
    out = tmp_path / "results"
    build_report(tmp_path / "runs", out)
    fig6 = out / "fig6" / "tiny"
    assert "Runs made on: fixture" in (fig6 / "fig6.md").read_text()  # in the artefact's own caption
    record = json.loads((fig6 / "provenance.json").read_text())
    assert record["rendered"]["date"][:4].isdigit() and record["made_by"][0]["runs"] == 1
    page = (out / "report.md").read_text()
    assert "other machines or commits" not in page
    # Table 6 re-rendered from the same runs, as if made on another CPU: the page says so under both
    record["made_by"][0]["cpu"] = "Intel Xeon"
    (fig6 / "provenance.json").write_text(json.dumps(record))
    page = build_report(None, out) and (out / "report.md").read_text()
    table6 = page.split("## Table 6")[1].split("\n## ")[0]
    assert "**Made on other machines or commits than its neighbours**" in table6 and "fig6: Intel Xeon" in table6
