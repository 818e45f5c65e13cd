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
