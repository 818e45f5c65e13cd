"""Table 5: the paper's ensemble row beside ours, the averaged softmax of Table 4's nets under multi-scale
testing, which the table evaluates through the one ensemble evaluation (`resrepro eval --ensemble`)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from resrepro.report.tables import build_table, render_table
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
    return root / "runs"


def cli_json(monkeypatch, capsys, *args: str) -> dict:
    code, out, err = in_process_cli(monkeypatch, capsys, "eval", *args, "--multi-scale", "--device", "cpu",
                                    "--format", "json")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.slow
def test_table5_shows_our_ensemble_and_its_members_beside_the_paper(runs, monkeypatch, capsys):
    table = build_table("table5", runs).frame.set_index("model")
    ensemble = cli_json(monkeypatch, capsys, str(runs / "resnet34-s0"), str(runs / "resnet50-s0"), "--ensemble")
    row = table.loc["resnet-ensemble"]
    assert (row.paper_top5, row.n) == (3.57, 2)
    assert row.ours_mean_top5 == pytest.approx(100 * ensemble["top5_error"])
    assert row.ours_mean_top1 == pytest.approx(100 * ensemble["top1_error"])
    alone = cli_json(monkeypatch, capsys, str(runs / "resnet50-s0"))
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
