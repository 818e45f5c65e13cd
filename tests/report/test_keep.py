"""Nothing rendered is replaced by less: a figure or table from fewer runs goes beside the one it would replace."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from resrepro.experiments import load_experiment
from resrepro.report.figures import render_figure
from resrepro.report.keep import PARTIAL, runs_in
from resrepro.report.render import render_experiment
from tests.report.test_figures import make_run

RESULTS = Path(__file__).resolve().parents[2] / "results"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_committed_artefacts_record_their_runs():
    assert runs_in((RESULTS / "fig1" / "tiny" / "fig1.md").read_text()) == 10  # plain20/56, seeds 0-4
    assert runs_in((RESULTS / "table6" / "tiny" / "table6.md").read_text()) == 17  # the n column's sum
    assert runs_in("| method | n |\n|---|---|\n| a | 2 |\n| b |  |\n\n`resrepro sweep x`\n") == 2
    assert runs_in("no table, no runs\n") == 0


def test_a_figure_from_fewer_runs_goes_beside_the_one_it_would_replace(tmp_path):
    two, one, out = tmp_path / "two", tmp_path / "one", tmp_path / "results"
    make_run(two, "plain20", 0), make_run(two, "plain20", 1), make_run(one, "plain20", 0)
    render_figure("fig1", two, out)
    before = snapshot(out)

    written, warnings = render_figure("fig1", one, out)
    assert snapshot(out) == before  # the 2-run figure is untouched
    assert written == [out / PARTIAL / f"fig1{ext}" for ext in (".png", ".pdf", ".md", "_claims.csv")]
    assert all(p.is_file() for p in written)
    kept = [w for w in warnings if "--force" in w]
    assert len(kept) == 1 and "1 run, fewer than the 2" in kept[0] and "--force" in kept[0]

    written, warnings = render_figure("fig1", one, out, force=True)
    assert written[0] == out / "fig1.png" and runs_in((out / "fig1.md").read_text()) == 1
    assert not any("--force" in w for w in warnings)


def test_as_many_or_more_runs_replace_normally(tmp_path):
    one, two, out = tmp_path / "one", tmp_path / "two", tmp_path / "results"
    make_run(one, "plain20", 0), make_run(two, "plain20", 0), make_run(two, "plain20", 1)
    render_figure("fig1", one, out)
    written, warnings = render_figure("fig1", one, out)
    assert written[0] == out / "fig1.png" and not any("--force" in w for w in warnings)
    written, warnings = render_figure("fig1", two, out)
    assert written[0] == out / "fig1.png" and runs_in((out / "fig1.md").read_text()) == 2
    assert not (out / PARTIAL).exists()


def test_a_table_from_fewer_runs_goes_beside_the_one_it_would_replace(tmp_path, monkeypatch):
    n = {"value": 2}

    def render_table_files(name, runs_dir=None, dataset=None):
        return {f"{name}.md": f"| method | n |\n|---|---|\n| resnet20 | {n['value']} |\n"}, []

    module = type(sys)("tables")
    module.render_table_files = render_table_files
    monkeypatch.setitem(sys.modules, "resrepro.report.tables", module)
    exp = dataclasses.replace(load_experiment("table6", "tiny", seeds=1), renders=("table:table6",))
    out = tmp_path / "results"
    assert render_experiment(exp, tmp_path / "runs", out)[0] == [out / "table6.md"]
    n["value"] = 1
    paths, warnings = render_experiment(exp, tmp_path / "runs", out)
    assert paths == [out / PARTIAL / "table6.md"] and runs_in((out / "table6.md").read_text()) == 2
    assert len(warnings) == 1 and "fewer than the 2" in warnings[0]
    assert render_experiment(exp, tmp_path / "runs", out, force=True)[0] == [out / "table6.md"]
    assert runs_in((out / "table6.md").read_text()) == 1
