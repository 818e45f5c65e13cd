"""Every bad input a user can type is one red line and exit 2, before any work: no traceback, nothing written.

Each case runs `resrepro ARGS` in a scratch folder holding a text file (``afile``), an empty folder (``adir``),
a run directory (``run``), a run whose config.json is a list (``listed``), a file torch.save wrote that is no
state dict (``list.pt``), experiment files with bad values, and an unwritable folder (``{ro}``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.inprocess import in_process_cli

FIXTURE_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "runs" / "cifar10" / "tiny" / "resnet20-s0"
TINY = ("--dataset", "synthetic", "--n", "1", "--width", "4", "--iters", "4", "--batch-size", "8", "--eval-every",
        "2", "--milestones", "2")
IMPORT = ("eval", "--import", "torchvision:resnet18", "--data-dir", "adir", "--weights")
EXPERIMENT = 'title = "t"\n{top}[defaults]\ndataset = "digits"\n{setting}\n[[runs]]\nmodels = ["resnet8"]\n'

CASES = [
    # Settings, range-checked where they are read (the spec: the CLI and experiment files alike).
    (("train", "cifar", *TINY, "--momentum", "-1"), "momentum must be in [0, 1), got -1.0"),
    (("train", "cifar", *TINY, "--momentum", "1"), "momentum must be in [0, 1)"),
    (("train", "cifar", *TINY, "--weight-decay", "-1"), "weight_decay must be a finite number >= 0"),
    (("train", "cifar", *TINY, "--weight-decay", "inf"), "weight_decay must be a finite number >= 0"),
    (("train", "cifar", *TINY, "--lr", "nan"), "lr must be a finite number > 0, got nan"),
    (("train", "cifar", *TINY, "--lr", "inf"), "lr must be a finite number > 0, got inf"),
    (("train", "cifar", *TINY, "--lr", "-0.1"), "lr must be a finite number > 0"),
    (("train", "cifar", *TINY, "--milestones", "-5"), "milestones must be increasing iterations >= 1, got [-5]"),
    (("train", "cifar", *TINY, "--milestones", "0"), "milestones must be increasing iterations >= 1"),
    (("train", "cifar", *TINY, "--n", "99999999999999999999"), "n must be at least 1 and at most 1000"),
    (("train", "cifar", *TINY, "--n", "0"), "n must be at least 1 and at most 1000"),
    (("train", "cifar", *TINY, "--seed", "99999999999999999999999"), "seed should be a 64-bit integer"),
    (("train", "cifar", *TINY, "--seed", "-1"), "seed must be in 0..4294967295"),
    (("train", "imagenet", "--momentum", "-1"), "momentum must be in [0, 1)"),
    (("train", "imagenet", "--lr", "nan"), "lr must be a finite number > 0"),
    (("train", "imagenet", "--milestones", "-5"), "milestones must be increasing iterations >= 1"),
    # Devices.
    (("train", "cifar", *TINY, "--device", "foo"), "--device 'foo' is not a device"),
    (("train", "cifar", *TINY, "--device", "meta"), "--device 'meta' is not a device"),
    (("train", "cifar", *TINY, "--device", "cuda:7"), "--device cuda:7"),
    (("train", "imagenet", "--device", "foo"), "--device 'foo' is not a device"),
    (("bench", "--device", "foo"), "--device 'foo' is not a device"),
    (("sweep", "fig1", "--scale", "tiny", "--gpus", "7"), "--gpus 7: no GPU 7 here"),
    # Outputs, checked before any work.
    (("train", "cifar", *TINY, "--out", "afile"), "--out afile is a file; name a folder"),
    (("train", "cifar", *TINY, "--out", "afile/run"), "--out afile/run cannot be created:"),
    (("train", "cifar", *TINY, "--out", "{ro}/run"), "cannot be written: no write permission"),
    (("train", "imagenet", "--out", "afile"), "--out afile is a file"),
    (("bench", "--out", "adir"), "--out adir is a folder; name a file"),
    (("bench", "--out", "afile/bench.json"), "--out afile/bench.json cannot be created"),
    (("bench", "--out", "{ro}/bench.json"), "cannot be written"),
    (("table", "table6", "--out", "adir"), "--out adir is a folder; name a file"),
    (("table", "table6", "--out", "afile/t.md"), "cannot be created"),
    (("table", "table6", "--out", "{ro}/t.md"), "cannot be written"),
    (("figure", "fig1", "--runs", "run", "--out", "afile"), "--out afile is a file"),
    (("plot", "run", "--out", "adir"), "--out adir is a folder"),
    (("plot", "run", "--out", "afile/c.png"), "cannot be created"),
    (("plot", "run", "--out", "curves.xyz"), "matplotlib cannot write .xyz files; choose one of"),
    (("layer-response", "run", "--out", "afile/r.csv"), "cannot be created"),
    (("sweep", "fig1", "--scale", "tiny", "--runs", "afile"), "--runs afile is a file"),
    (("sweep", "fig1", "--scale", "tiny", "--out", "afile"), "--out afile is a file"),
    # Inputs that are not what the command reads.
    (("table", "table6", "--runs", "afile"), "runs directory afile is a file"),
    (("figure", "fig1", "--runs", "afile"), "runs directory afile is a file"),
    (("plot", "afile"), "afile is a file: plot takes run directories"),
    (("plot", "listed"), "listed/config.json holds no JSON object: the run directory is damaged"),
    (("eval", "afile"), "afile is not a resrepro checkpoint ("),
    ((*IMPORT, "afile"), "--weights afile is not a file written by torch.save"),
    ((*IMPORT, "list.pt"), "--weights list.pt holds no state dict"),
    # Experiment files: checked when loaded; paths from them stay under --runs.
    (("sweep", "momentum.toml", "--dry-run"), "momentum must be in [0, 1), got -1.0"),
    (("sweep", "escape.toml"), "group '../../escape' should be a folder name"),
]


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    import torch

    (tmp_path / "afile").write_text("not a checkpoint, not a folder\n")
    (tmp_path / "adir").mkdir()
    shutil.copytree(FIXTURE_RUN, tmp_path / "run")
    shutil.copytree(FIXTURE_RUN, tmp_path / "listed")
    (tmp_path / "listed" / "config.json").write_text(json.dumps([1, 2]))
    torch.save([1, 2], tmp_path / "list.pt")
    (tmp_path / "momentum.toml").write_text(EXPERIMENT.format(top="", setting="momentum = -1.0"))
    (tmp_path / "escape.toml").write_text(EXPERIMENT.format(top='group = "../../escape"\n', setting=""))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def unwritable(tmp_path_factory) -> Path:
    """A folder this process cannot write in: one without write permission, or (as root, whom permissions do
    not stop) a read-only filesystem's."""
    ro = tmp_path_factory.mktemp("ro")
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):
        ro = Path("/proc/sys")
        if not ro.is_dir() or os.access(ro, os.W_OK):
            pytest.skip("no unwritable folder here")
    return ro


def snapshot(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, scratch, request, monkeypatch, capsys):
    if any("{ro}" in a for a in args):
        ro = str(request.getfixturevalue("unwritable"))
        args, message = tuple(a.replace("{ro}", ro) for a in args), message.replace("{ro}", ro)
    before = snapshot(scratch)
    code, _, err = in_process_cli(monkeypatch, capsys, *args)
    assert (code, err.count("\n")) == (2, 1), err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert snapshot(scratch) == before


def test_eval_of_a_runs_own_corrupt_checkpoint_still_says_to_delete_it(scratch, monkeypatch, capsys):
    (scratch / "run" / "checkpoint.pt").write_text("cut short by a full disk")
    code, _, err = in_process_cli(monkeypatch, capsys, "eval", "run")
    assert code == 2 and "run/checkpoint.pt is corrupt" in err and "delete it" in err
