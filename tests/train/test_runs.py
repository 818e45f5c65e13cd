"""Runs that lose nothing and never mix: one process per run directory, checkpoints that name their run, a
cadence that suits short runs, one line for a full disk, nothing left by a run that cannot start, and the same
bits after a stop anywhere."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import resrepro.train.checkpoint as checkpoint
import resrepro.train.loop as loop
from resrepro.errors import ResreproError
from resrepro.train.checkpoint import checkpoint_interval, load_checkpoint
from resrepro.train.evaluate import evaluate_run
from resrepro.train.families import load_trained
from resrepro.train.loop import train
from resrepro.train.rundir import RunDir, RunInUse
from resrepro.train.spec import CifarSpec
from tests.inprocess import in_process_cli
from tests.train.test_loop import TINY

ROOT = Path(__file__).resolve().parents[2]
# Subprocesses import this checkout's resrepro and tests, whatever the installed copy.
ENV = {**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
SHORT = {**TINY, "iters": 6, "eval_every": 3, "milestones": (3,)}
CLI_RUN = ["train", "cifar", "--n", "1", "--dataset", "synthetic", "--width", "4", "--batch-size", "32"]


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_directory_another_process_holds_is_refused_and_shown_as_held(tmp_path):
    spec = CifarSpec(**TINY)
    with RunDir(tmp_path / "run").lock():  # as another process would: flock locks are per open file
        with pytest.raises(RunInUse, match=f"run is in use by pid {os.getpid()} on .* since .*pytest"):
            train(spec, tmp_path / "run")
        assert RunDir(tmp_path / "run").holding(spec) == "held"
        assert [p.name for p in (tmp_path / "run").iterdir()] == [".lock"]
    assert RunDir(tmp_path / "run").holder() is None
    assert not (tmp_path / "run").exists()  # the lock's own new directory goes with it: nothing is left


def test_the_lock_of_a_killed_process_is_free(tmp_path):
    code = ("import os, signal, sys; from resrepro.train.rundir import RunDir; "
            "held = RunDir(sys.argv[1]).lock(); held.__enter__(); os.kill(os.getpid(), signal.SIGKILL)")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], env=ENV, capture_output=True)
    assert res.returncode == -signal.SIGKILL and (tmp_path / "run" / ".lock").exists()
    assert RunDir(tmp_path / "run").holder() is None
    with RunDir(tmp_path / "run").lock():
        assert json.loads((tmp_path / "run" / ".lock").read_text())["pid"] == os.getpid()


def test_two_runs_started_on_one_directory_at_once_one_trains_and_the_other_is_refused(tmp_path):
    out, other = tmp_path / "run", {}
    spec = CifarSpec(**{**SHORT, "seed": 7})

    def start_the_other_run(step, row):  # while this one is mid-run
        if step == 3:
            other["res"] = subprocess.run([sys.executable, "-m", "resrepro", *CLI_RUN, "--iters", "6",
                                           "--eval-every", "3", "--seed", "8", "--out", str(out)],
                                          capture_output=True, text=True, env=ENV, timeout=600)

    train(spec, out, on_step=start_the_other_run)
    res = other["res"]
    assert res.returncode == 2 and len(error_lines(res.stderr)) == 1, res.stderr
    assert f"{out} is in use by pid {os.getpid()}" in res.stderr
    run = RunDir(out)
    assert run.read_config()["seed"] == run.read_summary()["seed"] == load_checkpoint(out)["spec"]["seed"] == 7
    assert [r["iter"] for r in run.read_metrics()] == [3, 6]


def test_a_checkpoint_of_another_run_is_refused_wherever_it_is_loaded(tmp_path, monkeypatch, capsys):
    """plain8's weights fit resnet8 exactly (option-A shortcuts have no weights): only the hash tells them apart."""
    mine, theirs = CifarSpec(**SHORT), CifarSpec(**{**SHORT, "model": "plain8"})
    train(mine, tmp_path / "run")
    train(theirs, tmp_path / "other")
    shutil.copy(tmp_path / "other" / "checkpoint.pt", tmp_path / "run" / "checkpoint.pt")
    (tmp_path / "run" / "summary.json").unlink()
    mixed = rf"{tmp_path / 'run' / 'checkpoint.pt'} belongs to another run .* than {tmp_path / 'run' / 'config.json'}"
    with pytest.raises(ResreproError, match=mixed + r".*model: 'plain8' in the checkpoint, 'resnet8' in config"):
        train(mine, tmp_path / "run")  # resume
    for path in (tmp_path / "run", tmp_path / "run" / "checkpoint.pt"):
        with pytest.raises(ResreproError, match=mixed):
            load_trained(path)
    with pytest.raises(ResreproError, match=mixed):
        evaluate_run(tmp_path / "run", device="cpu")
    for args in (["eval", str(tmp_path / "run")], ["layer-response", str(tmp_path / "run"), "--device", "cpu"]):
        code, _, err = in_process_cli(monkeypatch, capsys, *args)
        assert code == 2 and len(error_lines(err)) == 1 and "belongs to another run" in err, err
    shutil.copy(tmp_path / "run" / "checkpoint.pt", tmp_path / "alone.pt")  # alone: its own spec says what it is
    assert load_trained(tmp_path / "alone.pt")[0] == theirs.replace(channels_last=True)  # with the layout it trained in


def test_checkpoint_cadence_adapts_to_short_runs():
    tiny_sweep = CifarSpec(model="resnet20", dataset="digits", width=8, batch_size=64, iters=600,
                           milestones=(300, 450), eval_every=50)
    assert tiny_sweep.checkpoint_every == 1000 and checkpoint_interval(tiny_sweep) == 50
    assert checkpoint_interval(tiny_sweep.replace(eval_every=600)) == 150  # four times per run at least
    assert checkpoint_interval(CifarSpec()) == 1000  # the paper's 64k iterations: as asked
    assert tiny_sweep.replace(checkpoint_every=7).config_hash() == tiny_sweep.config_hash()


def test_a_short_run_checkpoints_before_it_ends_and_its_cadence_changes_no_number(tmp_path, monkeypatch):
    saved, save = [], loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda path, state: (saved.append(state["step"]), save(path, state)))
    spec = CifarSpec(**{**TINY, "iters": 12, "milestones": (), "eval_every": 12})  # checkpoint_every 1000
    a = train(spec, tmp_path / "a")
    assert saved == [3, 6, 9, 12]
    b = train(spec.replace(checkpoint_every=2), tmp_path / "b")
    assert saved[4:] == [2, 4, 6, 8, 10, 12]
    # Checkpoints at other iterations regroup nothing: the interval's train_loss has the same bits.
    assert a["final"] == b["final"] and a["config_hash"] == b["config_hash"]


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    writes, write = [], checkpoint.atomic_write

    def disk_full_at_the_second(path, fill):
        writes.append(path)
        if len(writes) < 2:
            return write(path, fill)

        def half(f):
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        write(path, half)

    monkeypatch.setattr(checkpoint, "atomic_write", disk_full_at_the_second)
    out = tmp_path / "run"
    code, _, err = in_process_cli(monkeypatch, capsys, *CLI_RUN, "--iters", "12", "--eval-every", "3",
                                  "--out", str(out))
    assert code == 2 and len(error_lines(err)) == 1, err
    assert (f"cannot write {out / 'checkpoint.pt'}: No space left on device — the last good checkpoint "
            f"({out / 'checkpoint.pt'}, iteration 3) is kept") in err
    assert load_checkpoint(out)["step"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "metrics.csv"]  # no temp


def test_a_run_that_cannot_log_to_tensorboard_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the package is not installed
    with pytest.raises(ResreproError, match="needs the tensorboard package"):
        train(CifarSpec(**TINY, tensorboard=True), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _numbers(run_dir: Path) -> dict:
    """What a run computes (its timings aside): final values, metrics rows, last checkpoint."""
    timing = ("wall_s", "images_per_s")
    state = load_checkpoint(run_dir)
    return {
        "final": RunDir(run_dir).read_summary()["final"],
        "metrics": [{k: v for k, v in r.items() if k not in timing} for r in RunDir(run_dir).read_metrics()],
        "checkpoint": {k: state[k] for k in ("step", "model", "optimizer", "schedule", "stream", "rng")},
        "last_row": {k: v for k, v in state["last_row"].items() if k not in timing},
    }


@pytest.mark.slow
def test_a_run_stopped_anywhere_resumes_to_the_same_bits(tmp_path):
    """Checkpoints every 3 iterations, evaluations every 4, so stops fall inside intervals of both."""
    spec = CifarSpec(**{**TINY, "iters": 12, "milestones": (6, 9), "eval_every": 4, "checkpoint_every": 3})
    train(spec, tmp_path / "ref")
    ref = _numbers(tmp_path / "ref")
    for point, step in [("config", 0), ("step", 7), ("metrics", 8), ("checkpoint", 9), ("sigterm", 5),
                        ("checkpoint", 12), ("summary", 12)]:
        cut = tmp_path / f"{point}-{step}"
        res = subprocess.run([sys.executable, "-m", "tests.train.kill_at", str(cut), json.dumps(spec.to_dict()),
                              point, str(step)], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert res.returncode == (3 if point == "sigterm" else -signal.SIGKILL), (point, step, res.stderr)
        assert not (cut / "summary.json").exists()
        if point == "checkpoint":  # killed mid-write: the temp file is there, the previous checkpoint whole
            assert list(cut.glob(".checkpoint.pt.*.tmp"))
            assert load_checkpoint(cut)["step"] == step - 3
        train(spec, cut)
        assert _same(_numbers(cut), ref), (point, step)
        assert not list(cut.glob(".*.tmp")) and not (cut / ".lock").exists()
