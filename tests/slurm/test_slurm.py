"""`resrepro sweep --executor slurm` on a real one-node Slurm cluster (`.ci/slurm-up` starts one, as root on Debian
12): a tiny experiment end to end, a preempted task and a timed-out one that each resume to the bits of the run
trained here, a cancelled task named in one line, and a task of two ranks (gloo) that trains what one process with
the same BN groups trains. Where no cluster answers, every test skips and says why."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resrepro.train.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]


def _cluster() -> str | None:
    """Why there is no cluster to test against, or None."""
    if shutil.which("sbatch") is None:
        return "no Slurm here (sbatch not found): .ci/slurm-up starts a one-node cluster (root, Debian 12)"
    state = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True)
    if state.returncode != 0 or not {"idle", "mix", "alloc"} & set(state.stdout.split()):
        return f"the Slurm cluster has no node up ({(state.stderr or state.stdout).strip()}): run .ci/slurm-up"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.skipif(_cluster() is not None, reason=str(_cluster()))]

# Slurm tasks run in this machine's environment (sbatch exports it): this checkout, and one thread per process,
# so that a run trained in a task and one trained here compute the same bits.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1", "COLUMNS": "400"}
SLURM = ("--executor", "slurm", "--gpus-per-job", "0", "--cpus-per-job", "1")
# ResNet-20 of width 4 on the digits: 2,400 iterations, longer than the first time-limit warning (Slurm's first
# 30-s check) even on an idle machine, where 1,200 (one thread, NHWC) took under 30 s and ended before it.
LONG = {"models": ["resnet20"], "dataset": "digits", "width": 4, "batch_size": 32, "iters": 2400,
        "milestones": [1200, 1800], "eval_every": 300, "checkpoint_every": 300, "augment": False}


def experiment(where: Path, name: str, renders: tuple[str, ...] = (), **settings) -> Path:
    """An experiment file of one scale, tiny, holding ``settings`` and its models."""
    models = settings.pop("models")
    lines = [f'title = "{name}"', f"renders = {list(renders)!r}", "[defaults]"]
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}" for k, v in settings.items()]
    lines += ["[scale.tiny]", "[[runs]]", f"models = {models!r}"]
    (where / f"{name}.toml").write_text("\n".join(lines).replace("'", '"') + "\n")
    return where / f"{name}.toml"


def sweep(toml: Path, runs: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "resrepro", "sweep", str(toml), "--scale", "tiny", "--runs",
                             str(runs), "--out", str(runs.parent / "out"), *args],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    """Exit code and stderr of a sweep."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def job_id(runs: Path, timeout: float = 60) -> str:
    """The job (array) a sweep submitted: submitit's folder <runs>/.submitit/<group>-<scale>/<job id>[_<task>]."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p.name for p in runs.glob(".submitit/*/*") if p.is_dir()]
        if found:
            return found[0].split("_")[0]
        time.sleep(0.2)
    raise AssertionError(f"no job submitted under {runs}")


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def task_log(runs: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(runs.glob(".submitit/*/*/*_log.err")))


def same_bits(a: Path, b: Path, *, buffers: bool = True) -> None:
    """The two runs ended with the same weights (and BN statistics unless ``buffers`` is False) and logged the same
    training and evaluation figures (speed and wall time aside)."""
    x, y = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (a, b))
    assert x["step"] == y["step"]
    names = [k for k in x["model"] if buffers or not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert [k for k in names if not torch.equal(x["model"][k], y["model"][k])] == []
    keys = ("iter", "lr", "train_loss", "train_error") + (("eval_loss", "eval_error") if buffers else ())
    rows = [[{k: r[k] for k in keys} for r in RunDir(p).read_metrics()] for p in (a, b)]
    assert rows[0] == rows[1]


@pytest.fixture(autouse=True)
def _no_jobs_left(tmp_path):
    """A failing test leaves no job of its own running."""
    yield
    for folder in tmp_path.glob("**/.submitit/*/*"):
        subprocess.run(["scancel", folder.name.split("_")[0]], capture_output=True)


def test_a_tiny_experiment_trains_as_a_job_array_and_the_sweep_prints_only_its_own_lines(tmp_path):
    toml = experiment(tmp_path, "tiny", models=["plain20", "resnet20"], dataset="digits", width=4, batch_size=32,
                      iters=40, milestones=[20, 30], eval_every=20, augment=False)
    code, err = finish(sweep(toml, tmp_path / "runs", *SLURM))
    assert code == 0, err
    array = job_id(tmp_path / "runs")
    runs = tmp_path / "runs" / "tiny" / "tiny"
    assert all(RunDir(runs / f"{m}-s0").is_finished() for m in ("plain20", "resnet20"))
    # Accounting is off on this cluster: no sacct warning from submitit, nor sacct's own complaint, between them.
    lines = err.splitlines()
    assert lines[:2] == [f"tiny (tiny): 2 runs under {runs}", f"submitted 2 runs as slurm job array {array}; logs in "
                                                               f"{tmp_path}/runs/.submitit/tiny-tiny"], err
    assert [line.split(" done ")[0] for line in lines[2:4]] == ["[1/2]", "[2/2]"], err  # in the order they end
    assert sorted(line.split(" done ")[1] for line in lines[2:4]) == [f"{runs}/plain20-s0", f"{runs}/resnet20-s0"]
    assert lines[4:] == ["0 finished before, 2 trained, 0 failed"], err


def test_a_preempted_task_and_a_timed_out_one_resume_to_the_bits_of_the_run_trained_here(tmp_path):
    """`scontrol requeue` (what a preempting partition does: SIGTERM, back in the queue) after the first checkpoint;
    and a one-minute time limit, whose SIGUSR2 (submitit asks for it 90 s ahead, so it comes within Slurm's first
    30-s check of each start) the task checkpoints on, then requeues itself. Both sweeps wait and exit 0."""
    toml = experiment(tmp_path, "long", **LONG)
    preempted = sweep(toml, tmp_path / "preempted" / "runs", *SLURM)
    timed = sweep(toml, tmp_path / "timed" / "runs", *SLURM, "--time-min", "1")
    run = Path("long/tiny/resnet20-s0")
    wait_for(tmp_path / "preempted" / "runs" / run / "checkpoint.pt")
    subprocess.run(["scontrol", "requeue", job_id(tmp_path / "preempted" / "runs")], check=True)
    here = sweep(toml, tmp_path / "here" / "runs")  # meanwhile, the same run without Slurm
    for proc in (preempted, timed, here):
        code, err = finish(proc)
        assert code == 0 and err.splitlines()[-1] == "0 finished before, 1 trained, 0 failed", err

    log = task_log(tmp_path / "preempted" / "runs")
    stop = re.search(r"stopped at iteration (\d+); .*\(SIGTERM\)", log)
    assert stop and int(stop[1]) >= 300 and f"resuming from iteration {int(stop[1]):,}" in log, log
    same_bits(tmp_path / "preempted" / "runs" / run, tmp_path / "here" / "runs" / run)

    log = task_log(tmp_path / "timed" / "runs")
    stops = re.findall(r"stopped at iteration (\d+); .*time limit ahead \(SIGUSR2\)", log)
    # Saved where the signal came (not at the 300-iteration cadence), and resumed from there.
    assert stops and all(f"resuming from iteration {int(s):,}" in log for s in stops), log
    same_bits(tmp_path / "timed" / "runs" / run, tmp_path / "here" / "runs" / run)


def test_a_cancelled_task_fails_the_sweep_in_one_line_naming_its_run(tmp_path):
    toml = experiment(tmp_path, "long", **LONG)
    proc = sweep(toml, tmp_path / "runs", *SLURM)
    run = tmp_path / "runs" / "long" / "tiny" / "resnet20-s0"
    wait_for(run / "checkpoint.pt")
    array = job_id(tmp_path / "runs")
    subprocess.run(["scancel", array], check=True)
    code, err = finish(proc, timeout=120)
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    assert code == 1 and failed == [f"failed: {run}: job {array} was cancelled before the run finished (its "
                                    f"checkpoint is kept, sweep again to resume); log: "
                                    f"{tmp_path}/runs/.submitit/long-tiny/{array}/{array}_0_log.err"], err


def test_a_task_of_two_ranks_trains_what_one_process_trains_with_the_same_bn_groups(tmp_path):
    """Two gloo ranks of one Slurm task, batch 16 in BN groups of 8: each rank normalises its own group; one process
    computing the same two groups of each batch computes the same weights. Requeued after
    its first checkpoint, the task checkpoints once (rank 0) at a step both ranks agreed on, and resumes; rank 0
    then evaluates the run as Table 2 needs.
    (Only BN's running statistics differ: a rank keeps those of its own micro-batch, one process those of both.)"""
    settings = {"models": ["resnet18"], "dataset": "digits", "width": 4, "batch_size": 16, "iters": 120,
                "milestones": [60, 90], "eval_every": 40, "checkpoint_every": 40, "scale": [32, 40], "crop": 28,
                "workers": 0, "bn_group": 8}
    two = sweep(experiment(tmp_path, "ranks", ("table:table2",), **settings), tmp_path / "two" / "runs",
                "--executor", "slurm",
                "--gpus-per-job", "0", "--ranks-per-job", "2", "--cpus-per-job", "2")
    one = sweep(experiment(tmp_path, "one", **settings), tmp_path / "one" / "runs")
    wait_for(tmp_path / "two" / "runs" / "ranks/tiny/resnet18-s0" / "checkpoint.pt")
    subprocess.run(["scontrol", "requeue", job_id(tmp_path / "two" / "runs")], check=True)
    for proc, last in ((two, "0 finished before, 1 trained, 0 failed; 1 evaluations written under RUN/eval/"),
                       (one, "0 finished before, 1 trained, 0 failed")):
        code, err = finish(proc)
        assert code == 0 and err.splitlines()[-1] == last, err
    a, b = tmp_path / "two/runs/ranks/tiny/resnet18-s0", tmp_path / "one/runs/one/tiny/resnet18-s0"
    assert (a / "eval" / "ten-crop.json").exists()  # Table 2's protocol, by rank 0 once the ranks are done
    assert RunDir(a).read_summary()["world_size"] == 2 and RunDir(b).read_summary()["world_size"] == 1
    log = task_log(tmp_path / "two" / "runs")
    stops = re.findall(r"stopped at iteration (\d+); checkpoint saved", log)
    assert len(stops) == 2 and stops[0] == stops[1] and int(stops[0]) % 20 == 0, log  # each rank, one step
    assert log.count(f"resuming from iteration {int(stops[0]):,}") == 1, log  # said by rank 0
    same_bits(a, b, buffers=False)
