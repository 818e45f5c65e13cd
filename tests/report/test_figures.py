"""The paper's figures from hand-written run directories: files, plotted data, captions, missing runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resrepro.errors import ResreproError
from resrepro.report.figures import draw_figure, render_figure
from resrepro.report.tables import build_table
from resrepro.train.rundir import RunDir

ITERS = np.arange(100, 1001, 100)


def make_run(root: Path, model: str, seed: int = 0, *, level: float = 0.1, dataset: str = "cifar10",
             split: str = "test", iters: int = 1000, finished: bool = True, epochs: bool = False) -> Path:
    """A run whose errors fall linearly from 2·level to level (training error 0.8× that), shifted by seed."""
    path = root / f"{model}-{dataset}-{iters}-s{seed}"
    run = RunDir(path)
    run.write_config({"model": model, "dataset": dataset, "seed": seed, "iters": iters, "width": 16,
                      "config_hash": f"{model}{seed}", "data_dir": f"/data/{seed}"})
    steps = ITERS[: iters // 100]
    err = level * (2 - steps / steps[-1]) + 0.01 * seed
    run.write_metrics([{"iter": int(i), "epoch": float(i) / 50 if epochs else None, "lr": 0.1,
                        "train_loss": 1.0, "train_error": 0.8 * e, "eval_split": split, "eval_loss": 1.0,
                        "eval_error": e} for i, e in zip(steps, err, strict=True)])
    if finished:
        final = {"eval_error": float(err[-1]), "eval_split": split}
        run.write_summary({"status": "finished", "final": final})
    return path


def line(figure, gid: str):
    found = [ln for ax in figure.axes for ln in ax.lines if ln.get_gid() == gid]
    assert len(found) == 1, f"expected one line {gid!r}, found {len(found)}"
    return found[0]


def test_fig6_plots_the_mean_of_the_seeds_and_names_what_is_missing(tmp_path):
    for seed in (0, 1, 2):
        make_run(tmp_path, "plain20", seed)
    make_run(tmp_path, "plain56", level=0.15)
    make_run(tmp_path, "resnet110", level=0.07)
    result = draw_figure("fig6", tmp_path)
    test = line(result.figure, "plain20/test")
    # seeds add 0.00, 0.01, 0.02 to the same curve: the mean adds 0.01
    want = 100 * (0.1 * (2 - ITERS / 1000) + 0.01)
    np.testing.assert_allclose(test.get_ydata(), want)
    np.testing.assert_allclose(test.get_xdata(), ITERS)  # 1,000 iterations: not in the paper's 1e4 units
    assert result.figure.axes[0].get_xlabel() == "iterations"
    np.testing.assert_allclose(line(result.figure, "plain20/train").get_ydata(), 0.8 * want)
    assert line(result.figure, "plain20/train").get_linestyle() == "--"
    # resnet110 appears in the middle and the right panel
    assert sum(ln.get_gid() == "resnet110/test" for ax in result.figure.axes for ln in ax.lines) == 2
    assert any("resnet1202" in w and "resrepro sweep fig6" in w for w in result.warnings)
    assert "Missing: plain32, plain44, resnet20" in result.caption and "resnet1202" in result.caption
    assert "| plain-20 | plain20 | 0, 1, 2 | 1,000 |" in result.caption
    # the paper's 0-20%: early errors above it are cut off (plain-56 starts at 28.5%, ends at 15%)
    assert [ax.get_ylim() for ax in result.figure.axes] == [(0, 20), (0, 20), (0, 20)]
    # three seeds: a band from the lowest to the highest, and the legend counts them
    band = next(c for c in result.figure.axes[0].collections if c.get_gid() == "plain20/test/band")
    ys = band.get_paths()[0].vertices[:, 1]  # seed 0 ends lowest (10%), seed 2 starts highest (19% + 2)
    assert min(ys) == pytest.approx(10.0) and max(ys) == pytest.approx(21.0)
    assert "plain-20 (3 seeds)" in [t.get_text() for t in result.figure.axes[0].get_legend().get_texts()]
    # a curve ending above 20% widens the axis to hold its end
    make_run(tmp_path, "plain44", level=0.4)
    assert draw_figure("fig6", tmp_path).figure.axes[0].get_ylim() == (0, 40)


def test_lr_drops_are_marked_where_the_runs_divide_it(tmp_path):
    path = make_run(tmp_path, "resnet20")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"milestones": [500, 750]}))
    drops = [ln.get_xdata()[0] for ln in draw_figure("fig6", tmp_path).figure.axes[1].lines
             if str(ln.get_gid()).startswith("lr-drop")]
    assert drops == [500, 750]


def test_a_curve_of_one_evaluation_warns(tmp_path):
    make_run(tmp_path, "plain20", iters=100)
    result = draw_figure("fig1", tmp_path)
    assert any("plain20: one evaluation logged (at iteration 100)" in w and "--eval-every" in w
               for w in result.warnings)


def test_render_writes_png_pdf_and_caption(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    make_run(runs, "plain20")
    written, warnings = render_figure("fig1", runs, out)
    assert written == [out / "fig1.png", out / "fig1.pdf", out / "fig1.md", out / "fig1_claims.csv"]
    assert (out / "fig1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # fig1.toml's claims, undecided without plain-56: the caption and the CSV beside it say so, with the counts
    claims = pd.read_csv(out / "fig1_claims.csv").set_index("id")
    assert claims.loc["degradation", "verdict"] == "not enough runs"
    # (the hand-written plain-20 run records no train_eval_error, the number this claim is about)
    assert claims.loc["degradation", "numbers"] == ("plain56 has 0 finished runs with train_eval_error, 1 needed; "
                                                    "plain20 has 0 finished runs with train_eval_error, 1 needed")
    assert "- **not enough runs** — the 56-layer plain net" in (out / "fig1.md").read_text()
    assert (out / "fig1.pdf").read_bytes()[:5] == b"%PDF-"
    assert "plain56" in (out / "fig1.md").read_text() and any("plain56" in w for w in warnings)


def test_no_runs_says_which_runs_and_which_command(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(ResreproError, match=r"plain20, plain56.*resrepro sweep fig1"):
        render_figure("fig1", tmp_path / "runs", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ResreproError, match="unknown figure"):
        draw_figure("fig9", tmp_path)


def test_fig1_labels_a_validation_split_and_widens_the_axis_for_tiny_runs(tmp_path):
    make_run(tmp_path, "plain20", level=0.3, split="val")
    make_run(tmp_path, "plain56", level=0.3, split="val")
    result = draw_figure("fig1", tmp_path)
    assert line(result.figure, "plain56/val").get_ydata()[0] == pytest.approx(57)  # 0.3 × (2 - 0.1)
    left, right = result.figure.axes[:2]
    assert right.get_ylabel() == "val error (%)" and left.get_ylabel() == "training error (%)"
    assert right.get_ylim() == (0, 30) and left.get_ylim() == (0, 25)  # widened to hold the ends: 30%, 24%
    assert "validation error" in result.caption


def test_other_datasets_settings_and_broken_dirs(tmp_path):
    make_run(tmp_path, "plain20", dataset="digits", iters=500, level=0.2)
    make_run(tmp_path, "plain20", dataset="digits", iters=1000)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    result = draw_figure("fig1", tmp_path)
    # no cifar10 runs: the digits ones, the longest setting of them, each with a warning
    assert any("showing digits" in w for w in result.warnings)
    assert any("2 different settings" in w for w in result.warnings)
    assert any("skipped" in w and "broken" in w for w in result.warnings)
    assert len(line(result.figure, "plain20/test").get_ydata()) == 10
    with pytest.raises(ResreproError, match="on cifar10"):
        draw_figure("fig1", tmp_path, dataset="cifar10")


def test_unfinished_seed_limits_the_mean_to_common_iterations(tmp_path):
    make_run(tmp_path, "plain20", 0)
    make_run(tmp_path, "plain20", 1, iters=1000, finished=False)
    rows = RunDir(tmp_path / "plain20-cifar10-1000-s1").read_metrics()[:4]
    RunDir(tmp_path / "plain20-cifar10-1000-s1").write_metrics(rows)
    result = draw_figure("fig1", tmp_path)
    np.testing.assert_allclose(line(result.figure, "plain20/train").get_xdata(), ITERS[:4])
    assert "(unfinished)" in result.caption


def test_a_full_length_run_is_drawn_in_the_papers_units_of_1e4_iterations(tmp_path):
    path = make_run(tmp_path, "plain20")
    rows = RunDir(path).read_metrics()
    RunDir(path).write_metrics([{**r, "iter": 64 * r["iter"]} for r in rows])  # 6,400 to 64,000
    result = draw_figure("fig1", tmp_path)
    np.testing.assert_allclose(line(result.figure, "plain20/test").get_xdata(), 64 * ITERS / 1e4)
    assert {ax.get_xlabel() for ax in result.figure.axes} == {"iter. (1e4)"}


def test_an_unfinished_run_is_drawn_visibly_and_labelled_as_such(tmp_path):
    make_run(tmp_path, "plain20")
    make_run(tmp_path, "plain56", iters=100, finished=False)  # one logged iteration so far
    result = draw_figure("fig1", tmp_path)
    done, started = line(result.figure, "plain20/test"), line(result.figure, "plain56/test")
    assert started.get_marker() == "o" and len(started.get_xdata()) == 1  # a one-point line alone draws nothing
    assert started.get_label() == "plain-56 (unfinished, 100 it.)"
    assert done.get_marker() in ("None", None, "") and done.get_label() == "plain-20"
    legend = [t.get_text() for t in result.figure.axes[0].get_legend().get_texts()]
    assert "plain-56 (unfinished, 100 it.)" in legend


def test_figure_writes_where_sweep_does_results_name_scale(tmp_path, monkeypatch, capsys):
    from resrepro.experiments import load_experiment
    from tests.inprocess import in_process_cli

    for run in load_experiment("fig1", "tiny").runs:  # seed 3: a sweep with --seeds 4 made it
        rd = RunDir(tmp_path / "runs" / run.name)
        spec = run.spec.replace(seed=3)
        rd.write_config({**spec.to_dict(), "config_hash": spec.config_hash()})
        rd.write_metrics([{"iter": 50, "train_error": 0.5, "eval_error": 0.5, "eval_split": "test"}])
    monkeypatch.chdir(tmp_path)
    code, out, _ = in_process_cli(monkeypatch, capsys, "figure", "fig1", "--runs", "runs")
    assert code == 0 and (tmp_path / "results" / "fig1" / "tiny" / "fig1.png").is_file()
    assert (tmp_path / "results" / "fig1" / "tiny" / "fig1.md").is_file()


def test_fig4_uses_epochs_and_option_b_stands_in(tmp_path):
    make_run(tmp_path, "plain18", dataset="imagenet", level=0.3, epochs=True, split="val")
    make_run(tmp_path, "resnet34", dataset="imagenet", level=0.25, epochs=True, split="val")
    result = draw_figure("fig4", tmp_path)
    val = line(result.figure, "resnet34-A/val")
    np.testing.assert_allclose(val.get_xdata(), ITERS / 50)
    assert val.get_linewidth() > line(result.figure, "resnet34-A/train").get_linewidth()
    assert any("resnet34 (option B) stands in" in w for w in result.warnings)
    assert any("plain34" in w and "resnet18-A" in w for w in result.warnings)


def test_fig7_from_a_responses_csv(tmp_path):
    rows = []
    for run, model, layers, offset in (("a", "plain20", 19, 0.0), ("b", "plain20", 19, 0.2),
                                       ("c", "resnet56", 55, 0.0), ("d", "mystery9", 3, 0.0)):
        rows += [{"run": run, "model": model, "layer": k, "stage": 1, "name": f"bn{k}",
                  "std": 1 + np.sin(k) + offset, "split": "test", "bn_mode": "eval", "pooling": "all"}
                 for k in range(1, layers + 1)]
    csv = tmp_path / "responses.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    written, warnings = render_figure("fig7", None, tmp_path / "out", responses=csv)
    assert [p.name for p in written] == ["fig7.png", "fig7.pdf", "fig7.md", "fig7_claims.csv"]
    result = draw_figure("fig7", None, responses=csv)
    k = np.arange(1, 20)
    original = line(result.figure, "plain20/original")
    np.testing.assert_allclose(original.get_xdata(), k)
    np.testing.assert_allclose(original.get_ydata(), 1.1 + np.sin(k))  # mean of runs a and b
    np.testing.assert_allclose(line(result.figure, "plain20/sorted").get_ydata(),
                               np.sort(1.1 + np.sin(k))[::-1])
    assert len(line(result.figure, "resnet56/sorted").get_xdata()) == 55
    assert any("mystery9" in w for w in result.warnings)
    assert any("plain56, resnet20, resnet110" in w for w in result.warnings)
    assert "pooling: all" in result.caption and "| plain-20 | 19 | `a`, `b` |" in result.caption
    # one column per depth, so plain-20 and ResNet-20 share an axis of their own; seeds counted in the legend
    titles = [ax.get_title() for ax in result.figure.axes[:2]]
    assert titles == ["20 layers", "56 layers"]
    assert "plain-20 (mean of 2 runs)" in [t.get_text() for t in result.figure.axes[0].get_legend().get_texts()]


def test_fig7_needs_responses_or_runs(tmp_path):
    with pytest.raises(ResreproError, match="--responses"):
        draw_figure("fig7", None)
    make_run(tmp_path, "plain20")  # trained, but no checkpoint: nothing to measure
    with pytest.raises(ResreproError, match="resrepro sweep fig7"):
        draw_figure("fig7", tmp_path)


def test_caption_gives_final_errors_and_run_paths(tmp_path):
    path = make_run(tmp_path, "plain56", level=0.15)
    caption = draw_figure("fig1", tmp_path).caption
    assert caption.startswith("# Fig. 1")
    assert "| ResNet" not in caption and f"| 12.00 | 15.00 | `{path}` |" in caption


def test_a_table_and_a_figure_of_the_same_runs_count_the_same_runs(tmp_path):
    # resnet32 and resnet32-A are one net: both spellings are seeds of one experiment
    make_run(tmp_path, "resnet32", 0, level=0.08)
    make_run(tmp_path, "resnet32-A", 1, level=0.08)
    # two settings of resnet20, equally long and with as many seeds: a tie both reports must break alike
    a, b = make_run(tmp_path, "resnet20", 0), make_run(tmp_path, "resnet20", 1)
    RunDir(a).write_config({**RunDir(a).read_config(), "width": 8})
    table = build_table("table6", tmp_path).frame.set_index("model")
    result = draw_figure("fig6", tmp_path)
    for model in ("resnet32", "resnet20"):
        assert table.loc[model, "ours_mean"] == pytest.approx(line(result.figure, f"{model}/test").get_ydata()[-1])
    assert table.loc["resnet32", "n"] == 2 and "| ResNet-32 | resnet32 | 0, 1 |" in result.caption
    assert table.loc["resnet20", "n"] == 1 and f"| `{b}` |" in result.caption
