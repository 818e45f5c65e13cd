"""`resrepro eval RUN... --ensemble` (Table 5): the members' softmax averaged image by image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from resrepro.data.datasets import load_dataset
from resrepro.data.pipeline import eval_batches, normalizer
from resrepro.train.families import load_trained
from resrepro.train.loop import train
from resrepro.train.spec import CifarSpec
from tests.inprocess import in_process_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
TINY = dict(model="resnet8", dataset="synthetic", width=4, batch_size=32, iters=4, milestones=(3,), eval_every=2,
            eval_batch_size=250)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ensemble")
    train(CifarSpec(**TINY), root / "a")
    train(CifarSpec(**TINY, seed=1, zero_pad="split"), root / "b")
    return root / "a", root / "b"


def cli_json(monkeypatch, capsys, *args: str) -> dict:
    code, out, err = in_process_cli(monkeypatch, capsys, "eval", *args, "--device", "cpu", "--format", "json")
    assert code == 0, err
    return json.loads(out)


def test_an_ensemble_of_one_run_is_that_runs_evaluation(two_runs, monkeypatch, capsys):
    alone = cli_json(monkeypatch, capsys, str(two_runs[0]))
    ensemble = cli_json(monkeypatch, capsys, str(two_runs[0]), "--ensemble")
    assert ensemble["members"][0] | {"top5_error": None} == alone | {"top5_error": None}
    for key in ("top1_error", "images", "split", "dataset", "family"):
        assert ensemble[key] == alone[key], key
    assert ensemble["loss"] == pytest.approx(alone["loss"], rel=1e-5)  # -log softmax vs cross-entropy: rounding
    assert ensemble["top5_error"] == ensemble["members"][0]["top5_error"]


def test_an_ensemble_of_two_runs_is_their_averaged_softmax(two_runs, monkeypatch, capsys):
    splits = load_dataset("synthetic")
    mean, std = normalizer(splits.train, "pixel-mean")
    probs = []
    for run in two_runs:
        _, model = load_trained(run)
        with torch.no_grad():
            probs.append(torch.cat([model(x).softmax(1) for x, _ in eval_batches(splits.eval, 100, device="cpu",
                                                                                 mean=mean, std=std)]))
    avg, y = (probs[0] + probs[1]) / 2, splits.eval.labels
    top5 = avg.topk(5, dim=1).indices
    ensemble = cli_json(monkeypatch, capsys, *map(str, two_runs), "--ensemble")
    assert ensemble["top1_error"] == (avg.argmax(1) != y).double().mean().item()
    assert ensemble["top5_error"] == (top5 != y[:, None]).all(1).double().mean().item()
    assert ensemble["loss"] == pytest.approx(F.nll_loss(avg.log(), y).item(), rel=1e-5)
    assert [m["top1_error"] for m in ensemble["members"]] == [(p.argmax(1) != y).double().mean().item()
                                                               for p in probs]
    assert ensemble["images"] == 500 and ensemble["run"] == [str(r) for r in two_runs]


def test_the_text_output_shows_the_ensemble_beside_each_member(two_runs, monkeypatch, capsys):
    code, out, err = in_process_cli(monkeypatch, capsys, "eval", *map(str, two_runs), "--ensemble", "--device",
                                    "cpu")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and lines[2].startswith("ensemble: resnet8 + resnet8 on synthetic/test: top-1 error")
    assert all("top-5 error" in line for line in lines)


def test_runs_that_cannot_be_combined_are_one_line_exit_2(two_runs, tmp_path, monkeypatch, capsys):
    shutil.copytree(FIXTURES / "imagenet" / "tiny" / "resnet34-A-s0", tmp_path / "imagenet")
    digits = CifarSpec(**{**TINY, "dataset": "digits"})
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "config.json").write_text(json.dumps({**digits.to_dict(),
                                                                 "config_hash": digits.config_hash()}))
    for args, message in [
        ((two_runs[0], tmp_path / "imagenet"), "(family imagenet) and"),
        ((two_runs[0], tmp_path / "digits"), "(dataset digits) and"),
        ((two_runs[0], two_runs[1]), "add --ensemble to combine them"),
    ]:
        ensemble = () if "add --ensemble" in message else ("--ensemble",)
        code, _, err = in_process_cli(monkeypatch, capsys, "eval", *map(str, args), *ensemble)
        assert (code, err.count("\n")) == (2, 1), err
        assert message in " ".join(err.split()), err
