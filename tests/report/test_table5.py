"""Table 5: the paper's ensemble row beside ours, the averaged softmax of Table 4's nets under multi-scale
testing, read from the probabilities each run's own evaluation kept (`resrepro eval RUN --multi-scale`): the
table never runs a net, and gives what `resrepro eval --ensemble` gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from resrepro.report.tables import build_table, render_table
from resrepro.train import evaluate, families
from resrepro.train.evaluate import evaluate_run, evaluated
from resrepro.train.loop import train
from resrepro.train.spec import ImageNetSpec
from tests.imagefolder import write_imagefolder
from tests.inprocess import in_process_cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("table5")
    data = write_imagefolder(root / "data")
    for model in ("resnet34", "resnet50"):
        spec = ImageNetSpec(model=model, width=8, batch_size=6, iters=2, milestones=(1,), eval_every=2,
                            checkpoint_every=2, workers=0, device="cpu", data_dir=str(data), scale=(40, 48),
                            crop=32, test_scales=(32, 48))
        train(spec, root / "runs" / f"{model}-s0")
        evaluate_run(root / "runs" / f"{model}-s0", protocol="multi-scale", device="cpu")
    return root / "runs"


def cli_json(monkeypatch, capsys, *args: str) -> dict:
    code, out, err = in_process_cli(monkeypatch, capsys, "eval", *args, "--multi-scale", "--device", "cpu",
                                    "--format", "json")
    assert code == 0, err
    return json.loads(out)


def test_table5_reads_the_kept_probabilities_and_runs_no_net(runs, monkeypatch, capsys):
    ensemble = cli_json(monkeypatch, capsys, str(runs / "resnet34-s0"), str(runs / "resnet50-s0"), "--ensemble")
    alone = cli_json(monkeypatch, capsys, str(runs / "resnet50-s0"))

    def no_net(*args, **kwargs):
        raise AssertionError("the table built a net")

    monkeypatch.setattr(families, "build_model", no_net)
    monkeypatch.setattr(families, "load_trained", no_net)
    monkeypatch.setattr(evaluate, "load_trained", no_net)
    table = build_table("table5", runs).frame.set_index("model")
    row = table.loc["resnet-ensemble"]
    assert (row.paper_top5, row.n) == (3.57, 2)
    assert row.ours_mean_top5 == pytest.approx(100 * ensemble["top5_error"])
    assert row.ours_mean_top1 == pytest.approx(100 * ensemble["top1_error"])
    assert table.loc["resnet50"].ours_mean_top1 == pytest.approx(100 * alone["top1_error"])
    assert table.loc["resnet50"].paper_top5 == 5.25 and pd.isna(table.loc["resnet101"].ours_mean_top1)
    text, _ = render_table("table5", runs)
    assert "| ResNet (ILSVRC'15) |" in text and "the softmax of 2 runs (resnet34-s0, resnet50-s0)" in text


def test_table5_without_runs_shows_the_papers_rows():
    frame = build_table("table5").frame
    assert list(frame.label) == ["ResNet (ILSVRC'15)", "ResNet-34 B", "ResNet-34 C", "ResNet-50", "ResNet-101",
                                 "ResNet-152"]
    assert list(frame.paper_top5) == [3.57, 5.71, 5.60, 5.25, 4.60, 4.49]
    assert frame.n.isna().all()


def test_a_run_without_kept_probabilities_is_named_with_the_command_that_makes_them(runs, tmp_path):
    for run in ("resnet34-s0", "resnet50-s0"):
        shutil.copytree(runs / run, tmp_path / run, ignore=shutil.ignore_patterns("*.probs.pt"))
    table = build_table("table5", tmp_path)
    assert table.frame.n.isna().all()
    [line] = [w for w in table.warnings if "probabilities" in w]
    assert "resnet34-s0" in line and "resnet50-s0" in line and "`resrepro eval RUN --multi-scale`" in line
    assert evaluated(runs / "resnet34-s0", "multi-scale") and not evaluated(tmp_path / "resnet34-s0", "multi-scale")
