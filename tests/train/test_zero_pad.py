"""Option A's layout (``zero_pad``) is part of a CIFAR run's spec: recorded, hashed only off its old value, and
used wherever the run's net is rebuilt (training, resume, evaluation)."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch

from resrepro.analysis.aggregate import setting
from resrepro.errors import ResreproError
from resrepro.models.blocks import ZERO_PADS, ZeroPadShortcut
from resrepro.train.checkpoint import load_checkpoint
from resrepro.train.families import load_trained
from resrepro.train.loop import train
from resrepro.train.spec import CifarSpec, ZeroPad, spec_from_config
from tests.inprocess import in_process_cli
from tests.train.test_runs import ENV, ROOT

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
SPLIT = dict(model="resnet8", dataset="synthetic", width=4, batch_size=32, iters=8, milestones=(6,), eval_every=4,
             eval_batch_size=250, zero_pad="split")


def test_the_choices_are_the_models_own():
    assert typing.get_args(ZeroPad) == ZERO_PADS


def test_recorded_runs_keep_their_config_hashes():
    # These hashes were written before zero_pad existed: the default leaves them where they were.
    for path in (FIXTURES / "cifar10").rglob("config.json"):
        config = json.loads(path.read_text())
        assert spec_from_config(config).config_hash() == config["config_hash"], path
    spec = CifarSpec(model="resnet20")
    assert spec.config_hash() == CifarSpec(model="resnet20", zero_pad="append").config_hash()
    assert spec.config_hash() != spec.replace(zero_pad="split").config_hash()


def test_a_config_without_zero_pad_and_one_with_the_default_are_one_setting():
    config = json.loads((FIXTURES / "cifar10" / "tiny" / "resnet20-s0" / "config.json").read_text())
    assert setting(config) == setting({**config, "zero_pad": "append"}) != setting({**config, "zero_pad": "split"})


def test_zero_pad_off_option_a_is_refused():
    with pytest.raises(ResreproError, match="has no option A shortcuts"):
        CifarSpec(model="resnet20-B", zero_pad="split")
    with pytest.raises(ResreproError, match="unknown zero_pad 'middle'"):
        CifarSpec(model="resnet20", zero_pad="middle")


def _pads(model: torch.nn.Module) -> set[tuple[int, int]]:
    return {m.pad for m in model.modules() if isinstance(m, ZeroPadShortcut)}


@pytest.mark.slow
def test_a_split_run_trains_resumes_and_evaluates_in_the_split_layout(tmp_path, monkeypatch, capsys):
    spec = CifarSpec(**SPLIT)
    train(spec, tmp_path / "ref")
    assert json.loads((tmp_path / "ref" / "config.json").read_text())["zero_pad"] == "split"
    _, model = load_trained(tmp_path / "ref")
    assert _pads(model) == {(2, 2), (4, 4)}  # 4 -> 8 and 8 -> 16 channels, zeros on both sides

    # Killed after step 3 (last checkpoint at 2) and resumed: the same bits as the uninterrupted run.
    cut = tmp_path / "cut"
    res = subprocess.run([sys.executable, "-m", "tests.train.kill_at", str(cut), json.dumps(spec.to_dict()), "step",
                          "3"], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode < 0, res.stderr
    assert load_checkpoint(cut)["step"] == 2
    train(spec, cut)
    for name, value in load_checkpoint(tmp_path / "ref")["model"].items():
        assert torch.equal(value, load_checkpoint(cut)["model"][name]), name

    code, out, err = in_process_cli(monkeypatch, capsys, "eval", str(cut), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["top1_error"] == json.loads((cut / "summary.json").read_text())["final"]["eval_error"]
    # The same weights in the appended layout compute another function: the layout did matter here.
    state = load_checkpoint(cut)
    state["spec"] = {**state["spec"], "zero_pad": "append"}
    torch.save(state, tmp_path / "append.pt")
    code, out_append, err = in_process_cli(monkeypatch, capsys, "eval", str(tmp_path / "append.pt"), "--format",
                                           "json")
    assert code == 0, err
    assert json.loads(out_append)["loss"] != json.loads(out)["loss"]
    # Imported by a name of the other layout, a checkpoint that records its own is refused.
    code, _, err = in_process_cli(monkeypatch, capsys, "eval", "--import", "resrepro:resnet8", "--weights",
                                  str(cut / "checkpoint.pt"), "--dataset", "synthetic")
    assert code == 2 and "trained with zero_pad 'split'; evaluate it as a run" in " ".join(err.split()), err
