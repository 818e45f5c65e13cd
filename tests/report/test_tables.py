"""`resrepro table`: ours beside the paper's numbers, from the fixture run directories."""

from __future__ import annotations

import io
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from resrepro.cli.common import app
from resrepro.errors import ResreproError
from resrepro.report.tables import render_table

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
R20 = [f"cifar10/full/resnet20-s{i}" for i in range(3)]
R110 = [f"cifar10/full/resnet110-s{i}" for i in range(2)]


def final_error(run: str) -> float:
    return 100 * json.loads((FIXTURES / run / "summary.json").read_text())["final"]["eval_error"]


def table(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, ["table", *args])
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def markdown_rows(text: str) -> dict[str, dict[str, str]]:
    """The Markdown table as {row label: {header: cell}}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header, body = split[0], split[2:]
    return {cells[0]: dict(zip(header, cells, strict=True)) for cells in body}


def pm(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def test_table6_without_runs_shows_the_paper_and_dashes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./runs here
    out, err = table("table6", "--format", "markdown")
    rows = markdown_rows(out)
    assert rows["ResNet-110"]["paper"] == "6.43 (6.61±0.16)"
    assert rows["ResNet-20"]["paper"] == "8.75" and rows["ResNet-20"]["# params (paper)"] == "0.27M"
    assert rows["ResNet-20"]["# params (ours)"] == "269,722"
    assert all(rows[r]["ours"] == "—" and rows[r]["n"] == "0" for r in ("ResNet-20", "ResNet-110"))
    assert rows["Maxout"]["paper"] == "9.38" and rows["Maxout"]["ours"] == ""  # others: the paper only
    assert "paper's numbers only" in err


def test_table6_from_fixture_runs_mean_std_n_and_warnings():
    out, err = table("table6", "--runs", str(FIXTURES))
    rows = markdown_rows(out)
    r20 = [final_error(r) for r in R20]
    assert rows["ResNet-20"]["ours"] == pm(r20) and rows["ResNet-20"]["n"] == "3"
    assert rows["ResNet-20"]["best"] == f"{min(r20):.2f}"
    assert rows["ResNet-20"]["Δ"] == f"{statistics.mean(r20) - 8.75:+.2f}"
    r110 = [final_error(r) for r in R110]
    assert rows["ResNet-110"]["ours"] == pm(r110) and rows["ResNet-110"]["n"] == "2"
    assert rows["ResNet-110"]["Δ"] == f"{statistics.mean(r110) - 6.61:+.2f}"  # against the paper's mean
    assert rows["ResNet-32"]["ours"] == f"{final_error('cifar10/full/resnet32-A-s0'):.2f}"  # "resnet32-A"
    assert rows["ResNet-56"]["ours"] == "—" and rows["ResNet-56"]["n"] == "0"  # unfinished: not a result
    err = " ".join(err.split())  # rich wraps long lines
    assert "bad-json" in err and "foreign" in err and "unfinished, not counted" in err
    assert "digits" in err  # the tiny run on another dataset is named, not mixed in


def test_table6_on_another_dataset_says_so_under_the_table():
    out, _ = table("table6", "--runs", str(FIXTURES), "--dataset", "digits")
    rows = markdown_rows(out)
    assert rows["ResNet-20"]["ours"] == f"{final_error('cifar10/tiny/resnet20-s0'):.2f}"
    assert rows["ResNet-110"]["ours"] == "—"
    assert "trained and evaluated on digits, not cifar10" in out and "300 iterations" in out
    # digits minus CIFAR-10 means nothing: no Δ column, and the note says the claims are the comparison
    assert "Δ" not in rows["ResNet-20"] and "No Δ column: our runs are on digits" in out
    assert "Δ: ours mean − paper" not in out


def test_each_claim_is_printed_with_its_numbers_and_verdict():
    out, _ = table("table6", "--runs", str(FIXTURES))
    # table6.toml at the full scale (CIFAR-10 runs): ResNet-110's two seeds are too few for the paper's mean ± std
    assert ("- **not enough runs** — ResNet-110 within the paper's mean ± std over 5 runs (6.61 ± 0.16) (test "
            "error): resnet110 has 2 finished runs with eval_error, 5 needed") in out
    assert "resnet56 has 0 finished runs" in out  # its run is unfinished: not a result
    _, err = table("table6", "--runs", str(FIXTURES), "--format", "csv")
    assert "not enough runs — ResNet-56 beats ResNet-20" in " ".join(err.split())


def test_params_are_those_of_the_nets_trained_not_the_papers(tmp_path):
    # The tiny fixture run is 8 filters wide: a quarter of the paper's parameters, not its 269,722.
    out, _ = table("table6", "--runs", str(FIXTURES), "--dataset", "digits")
    rows = markdown_rows(out)
    assert rows["ResNet-20"]["# params (ours)"] == "68,050" and rows["ResNet-20"]["# params (paper)"] == "0.27M"
    assert rows["ResNet-110"]["# params (ours)"] == "1,727,962"  # no runs: the paper's width
    assert "8 filters wide where the paper has 16" in out
    # what the run's summary.json recorded comes first
    run = tmp_path / "resnet20-s0"
    run.mkdir()
    for f in ("config.json", "metrics.csv"):
        (run / f).write_bytes((FIXTURES / "cifar10/tiny/resnet20-s0" / f).read_bytes())
    summary = json.loads((FIXTURES / "cifar10/tiny/resnet20-s0/summary.json").read_text())
    (run / "summary.json").write_text(json.dumps(summary | {"params": 12_345}))
    assert markdown_rows(table("table6", "--runs", str(tmp_path))[0])["ResNet-20"]["# params (ours)"] == "12,345"


def test_csv_output_parses_back_with_numbers():
    out, _ = table("table6", "--runs", str(FIXTURES), "--format", "csv")
    df = pd.read_csv(io.StringIO(out)).set_index("model")
    for col in ("paper", "ours_mean", "ours_std", "ours_best", "n", "delta", "params"):
        assert pd.api.types.is_numeric_dtype(df[col]), col
    r20 = [final_error(r) for r in R20]
    assert df.loc["resnet20", "ours_mean"] == pytest.approx(statistics.mean(r20), abs=1e-4)
    assert df.loc["resnet20", "ours_std"] == pytest.approx(statistics.stdev(r20), abs=1e-4)
    assert df.loc["resnet20", "n"] == 3 and df.loc["resnet56", "n"] == 0
    assert df.loc["resnet110", "paper"] == 6.43 and df.loc["resnet1202", "params"] == 19_421_274
    assert pd.isna(df.loc["maxout", "ours_mean"]) and df.loc["resnet20", "dataset"] == "cifar10"


def test_imagenet_tables_use_the_protocol_the_paper_used():
    rows = markdown_rows(table("table3", "--runs", str(FIXTURES))[0])
    assert rows["ResNet-34 A"]["top-1 ours"] == "26.01" and rows["ResNet-34 A"]["top-5 ours"] == "8.22"
    assert rows["ResNet-34 C"]["top-1 paper"] == "24.19" and rows["ResNet-34 C"]["top-1 ours"] == "—"
    assert rows["GoogLeNet"]["top-1 paper"] == "—" and rows["GoogLeNet"]["top-5 paper"] == "9.15"
    assert markdown_rows(table("table2", "--runs", str(FIXTURES))[0])["ResNet-34"]["ours"] == "26.01"
    rows, err = table("table4", "--runs", str(FIXTURES))  # the fixture has no multi-scale evaluation
    assert markdown_rows(rows)["ResNet-34 B"]["top-1 ours"] == "—"


def test_each_table_names_the_evaluations_it_reads():
    from resrepro.report.tables import table_protocols

    names = ("table2", "table3", "table4", "table5", "table6")
    assert [table_protocols(n) for n in names] == [("ten-crop",), ("ten-crop",), ("multi-scale",), ("multi-scale",),
                                                   ()]


def test_ablation_cifar_rows_and_paper_numbers():
    rows = markdown_rows(table("ablation-cifar", "--runs", str(FIXTURES))[0])
    assert len(rows) == 12
    assert rows["ResNet-20 B"]["ours"] == f"{final_error('cifar10/full/resnet20-B-s0'):.2f}"
    assert rows["ResNet-20 B"]["paper"] == "—" and rows["ResNet-20 B"]["# params (ours)"] == "272,474"
    assert rows["ResNet-20 A"]["paper"] == "8.75" and rows["ResNet-20 A"]["n"] == "3"


def test_calibration_table_shows_peers_beside_the_paper():
    rows = markdown_rows(table("calibration")[0])
    assert rows["ResNet-110"]["nabla0001"] == "7.14 ± 0.20" and rows["ResNet-110"]["akamaster"] == "6.32"
    assert rows["plain-56"]["paper"] == "—"


def test_latex_is_booktabs_and_needs_no_jinja2(monkeypatch):
    text, _ = render_table("table6", fmt="latex")
    assert "\\toprule" in text and "ResNet-110" in text and "6.43 (6.61±0.16)" in text
    assert "\\begin{tabular}{lrrrrrrrr}" in text and "\\# layers" in text  # LaTeX specials escaped

    def no_jinja(*args, **kwargs):
        raise ImportError("Missing optional dependency 'Jinja2'")

    monkeypatch.setattr(pd.DataFrame, "to_latex", no_jinja)
    fallback, _ = render_table("table6", fmt="latex")
    assert "\\toprule" in fallback and "\\bottomrule" in fallback and "ResNet-110" in fallback
    assert fallback == text  # one renderer, with or without pandas' optional jinja2


def test_out_writes_the_file_and_nothing_to_stdout(tmp_path):
    out, err = table("table2", "--runs", str(FIXTURES), "--format", "csv", "--out", str(tmp_path / "t2.csv"))
    assert out == "" and "wrote" in err
    assert pd.read_csv(tmp_path / "t2.csv")["paper"].tolist() == [27.94, 28.54, 27.88, 25.03]


def test_unknown_format_is_a_user_error():
    with pytest.raises(ResreproError, match="markdown, csv, latex"):
        render_table("table6", fmt="html")


def test_unknown_table_is_one_red_line_and_exit_2():
    cli = "from resrepro.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", cli, "table", "table9"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown table 'table9'" in lines[0] and "table6" in lines[0]


def _on_digits(tmp_path: Path) -> Path:
    """The fixture's ImageNet run as if trained at the tiny scale (on the digits): a runs folder of its own."""
    runs = tmp_path / "runs" / "imagenet" / "tiny"
    shutil.copytree(FIXTURES / "imagenet" / "tiny", runs)
    for file in ("config.json", "summary.json"):
        path = runs / "resnet34-A-s0" / file
        path.write_text(path.read_text().replace('"dataset": "imagenet"', '"dataset": "digits"'))
    return runs


def test_a_tiny_table_whose_claim_the_scale_cannot_show_says_why_first_in_its_caption(tmp_path):
    from resrepro.experiments import load_experiment
    from resrepro.report.table_kit import CAVEAT

    caveat = load_experiment("table3", "tiny").caveat
    tiny, _ = table("table3", "--runs", str(_on_digits(tmp_path)))
    assert markdown_rows(tiny)["ResNet-34 A"]["top-1 ours"] == "26.01"  # the run is counted, on the digits
    caption = tiny.split("| ResNet-152")[1].split("\n\n", 2)[1]  # the first paragraph below the table
    assert caption == f"**{CAVEAT}** {caveat}"
    full, _ = table("table3", "--runs", str(FIXTURES))  # the same run on ImageNet: the full scale's table
    assert markdown_rows(full)["ResNet-34 A"]["top-1 ours"] == "26.01" and caveat not in full and CAVEAT not in full
    table2 = table("table2", "--runs", str(_on_digits(tmp_path / "2")))[0]  # each table says its own caveat
    assert load_experiment("table2", "tiny").caveat in table2 and caveat not in table2
