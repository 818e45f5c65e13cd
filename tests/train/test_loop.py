"""Training runs end to end on CPU: run directory contents, exact resume, SIGTERM, bad input."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resrepro.errors import ResreproError
from resrepro.train.checkpoint import load_checkpoint
from resrepro.train.families import load_trained
from resrepro.train.loop import train
from resrepro.train.rundir import METRIC_COLUMNS, RunDir
from resrepro.train.spec import CifarSpec
from tests.train.killed import train_until_killed

TINY = dict(model="resnet8", dataset="synthetic", width=4, batch_size=32, iters=24, milestones=(12, 18),
            eval_every=6, eval_batch_size=250)


def test_run_directory_holds_config_metrics_summary_checkpoint(tmp_path):
    spec = CifarSpec(**TINY)
    summary = train(spec, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    assert run.read_config()["config_hash"] == spec.config_hash()
    rows = run.read_metrics()
    assert [r["iter"] for r in rows] == [6, 12, 18, 24]
    assert list(rows[0]) == list(METRIC_COLUMNS)
    assert [r["lr"] for r in rows] == pytest.approx([0.1, 0.1, 0.01, 0.001])  # lr of the last step of each interval
    assert summary["status"] == "finished" and summary["iter"] == 24
    assert summary["final"]["eval_error"] == rows[-1]["eval_error"]
    assert 0 <= summary["final"]["train_eval_error"] <= 1
    assert summary["provenance"]["torch"] == torch.__version__
    state = load_checkpoint(run.path)  # weights_only=True
    assert state["step"] == 24


def test_same_seed_same_numbers_and_finished_run_is_not_retrained(tmp_path):
    spec = CifarSpec(**TINY)
    a = train(spec, tmp_path / "a")
    b = train(spec, tmp_path / "b")
    assert a["final"] == b["final"]
    mtime = (tmp_path / "a" / "metrics.csv").stat().st_mtime_ns
    assert train(spec, tmp_path / "a")["final"] == a["final"]
    assert (tmp_path / "a" / "metrics.csv").stat().st_mtime_ns == mtime


def test_resume_from_a_mid_run_checkpoint_gives_the_uninterrupted_result(tmp_path):
    spec = CifarSpec(**TINY, checkpoint_every=6)
    full = train(spec, tmp_path / "full")

    # Dies right after logging iteration 12, before its checkpoint is written
    train_until_killed(spec, tmp_path / "cut", at=12)
    assert load_checkpoint(tmp_path / "cut")["step"] == 6
    resumed = train(spec, tmp_path / "cut")
    assert resumed["final"] == full["final"]
    cut, ref = RunDir(tmp_path / "cut").read_metrics(), RunDir(tmp_path / "full").read_metrics()
    for key in ("iter", "lr", "train_error", "eval_error", "eval_loss"):
        assert [r[key] for r in cut] == [r[key] for r in ref]


def test_sigterm_saves_and_rerun_resumes_to_the_same_result(tmp_path):
    args = ["--n", "1", "--dataset", "synthetic", "--width", "4", "--batch-size", "32", "--iters", "120",
            "--milestones", "60,90", "--eval-every", "30", "--seed", "3"]
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "resrepro", "train", "cifar", *args, "--out", str(ref)], check=True,
                   capture_output=True)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "resrepro", "train", "cifar", *args, "--out", str(cut)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (cut / "metrics.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0, "the run should have been interrupted"
    assert "resume" in stderr and "Traceback" not in stderr
    step = load_checkpoint(cut)["step"]
    assert 30 <= step < 120
    assert not (cut / "summary.json").exists()
    subprocess.run([sys.executable, "-m", "resrepro", "train", "cifar", *args, "--out", str(cut)], check=True,
                   capture_output=True)
    a, b = RunDir(ref).read_summary(), RunDir(cut).read_summary()
    assert a["final"]["eval_error"] == b["final"]["eval_error"]
    assert a["final"]["eval_loss"] == b["final"]["eval_loss"]
    assert a["final"]["train_error"] == b["final"]["train_error"]
    errors = [[r["eval_error"] for r in RunDir(d).read_metrics()] for d in (ref, cut)]
    assert errors[0] == errors[1]


def test_a_run_dir_with_another_config_is_refused_and_untouched(tmp_path):
    train(CifarSpec(**TINY), tmp_path / "run")
    before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(ResreproError, match="holds a different run.*lr"):
        train(CifarSpec(**{**TINY, "lr": 0.05}), tmp_path / "run")
    assert (tmp_path / "run" / "config.json").read_text() == before


def test_a_run_that_failed_before_its_first_checkpoint_does_not_hold_its_directory(tmp_path):
    with pytest.raises(ResreproError, match="loss became"):  # diverges within the first checkpoint interval
        train(CifarSpec(**{**TINY, "lr": 1e12, "warmup": False}), tmp_path / "run")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["config.json"]
    corrected = CifarSpec(**TINY)
    assert train(corrected, tmp_path / "run")["status"] == "finished"
    assert RunDir(tmp_path / "run").read_config()["config_hash"] == corrected.config_hash()


def test_cli_run_that_cannot_start_claims_nothing_and_the_corrected_command_runs(tmp_path):
    out = tmp_path / "run"
    args = ["train", "cifar", "--n", "1", "--width", "8", "--iters", "4", "--batch-size", "16", "--eval-every", "2",
            "--out", str(out)]
    res = subprocess.run([sys.executable, "-m", "resrepro", *args, "--data-dir", str(tmp_path / "nowhere")],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 2 and "cifar-10-batches-py" in res.stderr
    assert not (out / "config.json").exists()
    res = subprocess.run([sys.executable, "-m", "resrepro", *args, "--dataset", "synthetic"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert RunDir(out).read_config()["dataset"] == "synthetic" and RunDir(out).is_finished()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    spec = CifarSpec(**TINY)
    train(spec, tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ResreproError, match="corrupt"):
        train(spec, tmp_path / "run")


def infinite_lr_from(step: int, monkeypatch) -> None:
    """An lr of inf from ``step`` on, through the schedule: a spec refuses a non-finite lr or lr_decay."""
    from resrepro.train.schedule import Schedule

    lr_at = Schedule.lr_at
    monkeypatch.setattr(Schedule, "lr_at", lambda self, s: math.inf if s >= step else lr_at(self, s))


@pytest.mark.parametrize("blow_up_at", [13, 17])
def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, blow_up_at,
                                                                                  monkeypatch):
    """An infinite lr from iteration ``blow_up_at``: at 13 the next losses are NaN; at 17, the interval's last
    update, every loss of the interval is finite and only the weights show the damage."""
    infinite_lr_from(blow_up_at, monkeypatch)
    spec = CifarSpec(**{**TINY, "milestones": (blow_up_at,), "checkpoint_every": 6})
    with pytest.raises(ResreproError, match=r"became .* before iteration 18; the last good checkpoint .*iteration 12"):
        train(spec, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    state = load_checkpoint(run.path)
    assert state["step"] == 12
    assert all(t.isfinite().all() for t in state["model"].values() if t.is_floating_point())
    assert [r["iter"] for r in run.read_metrics()] == [6, 12]
    assert run.read_summary() is None


def test_grad_checkpoint_gives_the_same_losses(tmp_path):
    spec = CifarSpec(**{**TINY, "iters": 6})
    a = train(spec, tmp_path / "a")
    b = train(spec.replace(grad_checkpoint=True), tmp_path / "b")
    assert b["final"]["train_loss"] == pytest.approx(a["final"]["train_loss"], rel=1e-5)
    assert b["final"]["eval_loss"] == pytest.approx(a["final"]["eval_loss"], rel=1e-5)


def test_load_trained_returns_the_trained_model(tmp_path):
    spec = CifarSpec(**TINY)
    train(spec, tmp_path / "run")
    loaded_spec, model = load_trained(tmp_path / "run")
    assert loaded_spec == spec.replace(channels_last=True) and not model.training  # the layout it trained in
    assert model.fc.out_features == 10


def test_cli_train_and_eval(tmp_path):
    env = {**os.environ, "COLUMNS": "120"}
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "resrepro", "train", "cifar", "--n", "1", "--dataset", "synthetic",
                          "--width", "4", "--iters", "8", "--batch-size", "16", "--eval-every", "4", "--out", str(out)],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    final = json.loads(res.stdout)
    ev = subprocess.run([sys.executable, "-m", "resrepro", "eval", str(out), "--format", "json"],
                        capture_output=True, text=True, env=env)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["top1_error"] == pytest.approx(final["eval_error"])


def test_cli_help_says_that_rerunning_resumes():
    res = subprocess.run([sys.executable, "-m", "resrepro", "train", "cifar", "--help"], capture_output=True,
                         text=True, env={**os.environ, "COLUMNS": "100"})
    text = " ".join(res.stdout.replace("│", " ").split())
    assert "Rerun the same command to resume from its last checkpoint" in text
    # The promise it can keep: bit-exact on one machine's CPU, not through a GPU's nondeterministic kernels.
    assert "On a CPU an interrupted run ends with the same numbers, bit for bit, on the same machine" in text
    assert "on a GPU, cuDNN and atomic-add kernels are not deterministic" in text
    assert "If it holds this run, training resumes from its checkpoint" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--n", "0"], "n must be at least 1"),
    (["--shortcut", "D"], "--shortcut"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent/place"], "cifar-10-batches-py"),
    (["--milestones", "a,b"], "--milestones"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    res = subprocess.run([sys.executable, "-m", "resrepro", "train", "cifar", *args, "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 2
    assert message in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in res.stderr and len(errors) == 1


def test_cli_eval_of_a_missing_run_is_a_clear_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "resrepro", "eval", str(tmp_path / "nothing")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "no checkpoint" in res.stderr


def test_spec_round_trips_through_config_json():
    spec = CifarSpec(**TINY)
    assert CifarSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ResreproError, match="has no setting lerning_rate"):
        CifarSpec.from_dict({**spec.to_dict(), "lerning_rate": 1})


def test_imagenet_model_is_refused_for_cifar_training():
    with pytest.raises(ResreproError, match="ImageNet"):
        CifarSpec(model="resnet50")


def test_checkpoint_is_written_atomically(tmp_path):
    """A crash while writing leaves the previous checkpoint intact and no temp file behind."""
    from resrepro.io import atomic_write
    from resrepro.train.checkpoint import save_checkpoint

    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}})

    def crash(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, crash)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in Path(tmp_path).iterdir()] == ["c.pt"]


@pytest.mark.parametrize("content", [
    {"model": {"fc.weight": torch.zeros(10, 16)}},  # weights without the spec that says which net they are
    {"state_dict": {"linear.weight": torch.zeros(10, 64)}, "best_prec1": 91.7},  # another project's file
])
def test_cli_eval_of_a_specless_or_foreign_checkpoint_is_one_line_and_exit_2(tmp_path, content):
    path = tmp_path / "weights.pt"
    torch.save(content, path)
    res = subprocess.run([sys.executable, "-m", "resrepro", "eval", str(path)], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and str(path) in res.stderr


def test_a_compiled_run_does_not_time_its_compilation(tmp_path, monkeypatch):
    """The first calls of a compiled model compile it (seconds to minutes): images/s leaves them out, wall_s not."""
    calls = []

    class SlowToCompile(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            calls.append(1)
            if len(calls) == 1:
                time.sleep(3.0)  # what compiling costs, at the first call only
            return self.model(x)

    def slow_compile(model, **kwargs):
        return SlowToCompile(model)

    monkeypatch.setattr(torch, "compile", slow_compile)
    summary = train(CifarSpec(**{**TINY, "compile": True}), tmp_path / "run")
    assert len(calls) >= TINY["iters"]
    assert summary["wall_s"] > 3.0
    timed_images = (TINY["iters"] - 3) * TINY["batch_size"]  # the first 3 steps after a start are not timed
    timed_seconds = timed_images / summary["images_per_s"]
    # The compilation's 3 s are in wall_s and not in the timed seconds, however slow a loaded machine steps.
    assert summary["wall_s"] - timed_seconds >= 3.0


def test_the_interval_clock_laps_after_the_intervals_one_sync(tmp_path, monkeypatch):
    """On a GPU the steps are queued: only reading the interval's sums waits for them, so a lap taken before that
    read would leave the queued work out of the interval's seconds (and inflate images/s)."""
    from resrepro.train import loop
    from resrepro.train.progress import IntervalClock

    order, all_reduce, lap = [], loop.all_reduce, IntervalClock.lap

    class Read:
        def __init__(self, tensor):
            self.tensor = tensor

        def tolist(self):
            order.append("sync")
            return self.tensor.tolist()

        def item(self):
            return self.tensor.item()

    def laps(self):
        order.append("lap")
        return lap(self)

    monkeypatch.setattr(loop, "all_reduce", lambda t, world: Read(all_reduce(t, world)))
    monkeypatch.setattr(IntervalClock, "lap", laps)
    train(CifarSpec(**{**TINY, "iters": 12}), tmp_path / "run")
    assert len(order) >= 4 and order == ["sync", "lap"] * (len(order) // 2)


def out_of_memory(self, x, y, lr):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize(("grad_checkpoint", "advice"), [(False, "use --grad-checkpoint"),
                                                         (True, "a GPU with more memory or a smaller --batch-size")])
def test_cuda_out_of_memory_is_one_line_naming_the_batch_and_what_to_change(tmp_path, monkeypatch, capsys,
                                                                             grad_checkpoint, advice):
    from resrepro.train.step import TrainStep
    from tests.inprocess import in_process_cli

    monkeypatch.setattr(TrainStep, "__call__", out_of_memory)
    monkeypatch.setenv("HOME", str(tmp_path))
    flag = ["--grad-checkpoint"] if grad_checkpoint else []
    code, _, err = in_process_cli(monkeypatch, capsys, "train", "cifar", "--n", "1", "--width", "4", "--dataset",
                                  "synthetic", "--iters", "4", "--batch-size", "16", *flag, "--out",
                                  str(tmp_path / "r"))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    message = " ".join(err.split())
    assert "CUDA out of memory in iteration 1 at 16 images per GPU" in message and advice in message


@pytest.mark.slow
def test_the_gpu_fast_path_as_far_as_a_cpu_goes_trains_and_resumes_exactly(tmp_path):
    """torch.compile (inductor's CPU kernels), bf16 autocast and channels_last, as a CUDA run uses them."""
    spec = CifarSpec(**{**TINY, "width": 8, "compile": True, "precision": "bf16", "channels_last": True,
                        "checkpoint_every": 6})
    full = train(spec, tmp_path / "full")
    rows = RunDir(tmp_path / "full").read_metrics()
    assert all(math.isfinite(r[k]) for r in rows for k in ("train_loss", "eval_loss"))
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]  # it learns

    train_until_killed(spec, tmp_path / "cut", at=12)
    assert train(spec, tmp_path / "cut")["final"] == full["final"]
    assert full["images_per_s"] > 0
