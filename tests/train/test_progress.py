"""Progress where a run is watched: plain lines at a steady cadence off a terminal, figures without a host sync."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resrepro.train.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^resnet8 s0: iter (\d+)/(\d+) \(\d+%\), lr 0\.1, loss (\S+), err (\S+), (\S+) img/s, ETA (\S+)$")


def test_off_a_terminal_progress_lines_appear_while_the_run_is_alive(tmp_path):
    # stderr is a pipe (as under Slurm, CI, nohup): read line by line while the trainer runs.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RESREPRO_PROGRESS_SECONDS": "0.2"}
    args = ["train", "cifar", "--dataset", "synthetic", "--n", "1", "--width", "4", "--batch-size", "16",
            "--iters", "400", "--eval-every", "400", "--device", "cpu", "--out", str(tmp_path / "run")]
    proc = subprocess.Popen([sys.executable, "-m", "resrepro", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    live: list[re.Match] = []
    try:
        for line in proc.stderr:
            m = LINE.match(line.strip())
            if m and proc.poll() is None:
                live.append(m)
            if len(live) >= 3:
                break
    finally:
        proc.kill()
        proc.wait()
    assert len(live) >= 3, "fewer than three progress lines before the run ended"
    iters = [int(m[1]) for m in live]
    assert iters == sorted(iters) and iters[0] < iters[-1] and {int(m[2]) for m in live} == {400}
    last = live[-1]
    assert float(last[3]) > 0 and last[4].endswith("%")  # figures from the device sums, not "—" or nan
    assert last[5] != "—" and re.fullmatch(r"\d+:\d\d:\d\d", last[6])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Untouchable:
    """Sums the progress must not read when no update is due (reading them is the host sync we avoid)."""

    def __getattr__(self, name):
        raise AssertionError(f"sums read ({name}) between updates")


def test_progress_reads_the_sums_only_when_due_and_keeps_figures_across_a_reset():
    clock, shown = Clock(), []
    p = Progress(total=100, start=0, batch_size=10, every=5.0,
                 emit=lambda *a: shown.append(a), clock=clock)
    for step in range(1, 5):  # not due yet: the sums are not touched
        clock.now = step
        p.step(step, 0.1, Untouchable())
    clock.now = 5.0
    p.step(5, 0.1, torch.tensor([5 * 2.0 * 10, 25.0, 50.0], dtype=torch.float64))  # loss 2.0, error 50%
    clock.now = 5.5
    p.step(6, 0.1, Untouchable())  # a CPU snapshot is ready at once: shown, without reading the new sums
    (step, lr, figures, speed, eta), = shown
    assert step == 5 and lr == 0.1 and figures == pytest.approx((2.0, 0.5))
    assert speed == pytest.approx(5 * 10 / 5.0) and eta == pytest.approx(95 / 1.0)
    clock.now = 10.0
    p.step(10, 0.01, torch.zeros(3, dtype=torch.float64))  # the sums were just reset at an interval's end
    p.step(11, 0.01, Untouchable())
    step, lr, figures, speed, eta = shown[-1]
    assert (step, lr) == (10, 0.01) and figures == pytest.approx((2.0, 0.5))  # the last figures, not nan
    assert speed == pytest.approx(5 * 10 / 5.0) and eta == pytest.approx(90 / 1.0)


def test_the_last_step_is_always_shown():
    clock, shown = Clock(), []
    p = Progress(total=3, start=0, batch_size=1, every=60.0, emit=lambda *a: shown.append(a), clock=clock)
    for step in (1, 2, 3):
        clock.now = step
        p.step(step, 0.1, torch.tensor([3.0, 1.0, 3.0], dtype=torch.float64))
    p.close()
    assert [s[0] for s in shown] == [3] and shown[0][2] == pytest.approx((1.0, 1 / 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_due_update_copies_the_sums_without_waiting_for_the_gpu():
    clock, shown = Clock(), []
    p = Progress(total=10, start=0, batch_size=1, every=1.0, emit=lambda *a: shown.append(a), clock=clock)
    sums = torch.tensor([4.0, 1.0, 2.0], dtype=torch.float64, device="cuda")
    torch.cuda._sleep(4_000_000_000)  # a queue the host must not wait for (about two seconds of GPU work)
    clock.now = 1.0
    start = time.perf_counter()
    p.step(1, 0.1, sums)
    assert time.perf_counter() - start < 0.5 and shown == [] and p.pending is not None
    p.close()  # the end of a run may wait for the last figures
    assert shown[0][2] == pytest.approx((2.0, 0.5))


def test_a_family_that_counts_no_errors_shows_a_dash_not_zero_percent():
    # Detection's misses mean nothing (the loop's sums hold 0 for them): "err 0.0%" would read as a perfect run.
    from resrepro.train.progress import plain_line

    clock, shown = Clock(), []
    p = Progress(total=2, start=0, batch_size=1, every=60.0, emit=lambda *a: shown.append(a), errors=False,
                 clock=clock)
    for step in (1, 2):
        clock.now = step
        p.step(step, 0.1, torch.tensor([3.0, 0.0, 2.0], dtype=torch.float64))
    p.close()
    assert shown[-1][2] == (1.5, None)
    lines = []
    import sys

    stderr, sys.stderr = sys.stderr, type("W", (), {"write": lines.append, "flush": lambda self: None})()
    try:
        plain_line("det s0", 2)(*shown[-1])
    finally:
        sys.stderr = stderr
    assert "loss 1.500, err —," in lines[0]
