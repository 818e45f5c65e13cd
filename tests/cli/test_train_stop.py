"""Stopping `resrepro train`: Ctrl-C is a stop the user asked for (a plain line, exit 130, as the README says),
SIGTERM a scheduler's, and SIGUSR2 its warning of a time limit (`sbatch --signal=USR2@90`): one red line, exit 2;
either way the rerun says where it resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from resrepro.train.checkpoint import load_checkpoint

ARGS = ["train", "cifar", "--n", "1", "--dataset", "synthetic", "--width", "4", "--batch-size", "32", "--iters",
        "60", "--milestones", "30,45", "--eval-every", "15", "--device", "cpu"]


@pytest.mark.parametrize("signum, code, error", [(signal.SIGINT, 130, False), (signal.SIGTERM, 2, True),
                                                  (signal.SIGUSR2, 2, True)], ids=["ctrl-c", "sigterm", "sigusr2"])
def test_a_stopped_run_says_where_its_checkpoint_is_and_the_rerun_resumes_from_it(tmp_path, signum, code, error):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "resrepro", *ARGS, "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    last = stderr.strip().splitlines()[-1]
    assert proc.returncode == code, stderr
    assert last.startswith("error:") == error and "Traceback" not in stderr
    assert str(run) in last and "rerun the same command to resume" in last
    step = load_checkpoint(run)["step"]

    rerun = subprocess.run([sys.executable, "-m", "resrepro", *ARGS, "--out", str(run)],
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming from iteration {step}\n" in rerun.stderr


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 2), (signal.SIGUSR2, 2)],
                         ids=["ctrl-c", "sigterm", "sigusr2"])
def test_a_signal_to_the_whole_process_group_stops_a_run_with_loader_workers_at_a_checkpoint(tmp_path, signum, code):
    """Slurm (preemption, scancel, a time limit's warning), systemd, `kill -TERM -PGID` and a terminal's Ctrl-C
    signal every process of the group, the DataLoader's workers too: a worker killed by SIGTERM once failed the run
    with a traceback at the next batch ("DataLoader worker ... is killed by signal: Terminated"), no checkpoint
    saved. The workers leave the stop to the main process, which saves and says where."""
    import os

    from tests.imagefolder import write_imagefolder

    data, run = write_imagefolder(tmp_path / "data"), tmp_path / "run"
    args = ["train", "imagenet", "--depth", "18", "--width", "8", "--batch-size", "6", "--iters", "400",
            "--milestones", "300", "--eval-every", "2", "--workers", "2", "--device", "cpu", "--data-dir", str(data),
            "--out", str(run)]
    proc = subprocess.Popen([sys.executable, "-m", "resrepro", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signum)  # the run's process and its two loader workers
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code and "Traceback" not in stderr, stderr
    assert "rerun the same command to resume" in stderr.strip().splitlines()[-1]
    assert load_checkpoint(run)["step"] >= 2
