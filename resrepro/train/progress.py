"""What a run shows while it trains, at a steady cadence and with no host sync per step: a rich bar on a
terminal, plain lines in a log (Slurm, CI, nohup); and the interval clock behind its images/s."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch


class IntervalClock:
    """Training seconds of an interval (evaluation and checkpoints excluded), and of its timed steps."""

    def __init__(self, untimed: int) -> None:
        self.untimed, self.steps = untimed, 0
        self.restart()

    def restart(self) -> None:
        self.start = self.timed_from = time.perf_counter()
        self.timed_images = 0

    def tick(self, images: int) -> None:
        self.steps += 1
        if self.steps <= self.untimed:
            self.timed_from = time.perf_counter()
        else:
            self.timed_images += images

    def lap(self) -> tuple[float, int, float]:
        """(seconds, timed images, timed seconds) since the last restart."""
        now = time.perf_counter()
        timed = now - self.timed_from if self.steps > self.untimed else 0.0
        return now - self.start, self.timed_images, timed


# Seconds between progress updates: the bar's figures on a terminal; one plain line elsewhere (Slurm, CI, nohup,
# a pipe), where a line a minute keeps a log live without burying it. RESREPRO_PROGRESS_SECONDS overrides the
# plain cadence (a display setting, never part of a run).
BAR_EVERY_S, LINE_EVERY_S = 1.0, 60.0


class _Snapshot:
    """The loop's device-side sums (loss, misses, images) at one step, copied into ``host`` asynchronously: read
    once the copy has landed (a CUDA event says so), it costs the GPU queue no sync."""

    def __init__(self, sums: torch.Tensor, host: torch.Tensor | None, step: int, lr: float, at: float) -> None:
        self.step, self.lr, self.at, self.event = step, lr, at, None
        if sums.is_cuda:
            self.host = host.copy_(sums, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = sums.clone()

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def figures(self) -> tuple[float, float] | None:
        """(mean loss, error) over the interval's steps so far; None right after the sums were reset."""
        if self.event is not None:
            self.event.synchronize()
        loss, wrong, images = self.host.tolist()
        return (loss / images, wrong / images) if images else None


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


class Progress:
    """Where a run stands, at a steady cadence: a rich bar on a terminal, a plain line elsewhere. ``step`` is called
    after every training step and only compares the clock with the next due time; figures come from snapshots
    of the device-side sums, shown once their copy has landed, so progress adds no host sync to the steps."""

    def __init__(self, total: int, start: int, batch_size: int, every: float, emit, errors: bool = True,
                 clock=time.monotonic) -> None:
        self.total, self.batch_size, self.every, self.emit, self.clock = total, batch_size, every, emit, clock
        self.errors = errors
        self.next_at = clock() + every
        self.origin = (start, clock())  # (step, time) this process started at
        self.first: tuple[int, float] | None = None  # the pace is measured from here once it exists: the first
        self.last: tuple[int, float] | None = None  # steps include compiling and filling the data pipeline
        self.pending: _Snapshot | None = None
        self.figures: tuple[float, float] | None = None
        self.host: torch.Tensor | None = None  # pinned once, reused: one snapshot is in flight at a time

    def step(self, step: int, lr: float, sums: torch.Tensor) -> None:
        final = step >= self.total
        if self.pending is not None and (self.pending.ready() or final):
            self._show()
        now = self.clock()
        if (now >= self.next_at or final) and self.pending is None:
            self.next_at = now + self.every
            if sums.is_cuda and self.host is None:
                self.host = torch.empty(sums.shape, dtype=sums.dtype, pin_memory=True)
            self.pending = _Snapshot(sums, self.host, step, lr, now)

    def close(self) -> None:
        if self.pending is not None:
            self._show()

    def _show(self) -> None:
        snap, self.pending = self.pending, None
        figures = snap.figures()
        if figures is not None and not self.errors:
            figures = (figures[0], None)
        self.figures = figures or self.figures  # keep the last figures across a reset of the sums
        (s0, t0), (s1, t1) = self.last or self.origin, self.first or self.origin
        speed = (snap.step - s0) * self.batch_size / (snap.at - t0) if snap.at > t0 else None
        pace = (snap.step - s1) / (snap.at - t1) if snap.at > t1 and snap.step > s1 else None
        self.last = (snap.step, snap.at)
        self.first = self.first or self.last
        self.emit(snap.step, snap.lr, self.figures, speed, (self.total - snap.step) / pace if pace else None)


def _figures_text(figures: tuple[float, float | None] | None) -> tuple[str, str]:
    """Loss and error as shown; "—" before the first figures, and for an error a family does not count."""
    if figures is None:
        return "—", "—"
    return f"{figures[0]:.3f}", "—" if figures[1] is None else f"{100 * figures[1]:.1f}%"


def plain_line(label: str, total: int):
    """One log line per update: iteration/total, lr, loss, error, images/s, ETA (what Slurm and CI logs show)."""
    import sys

    def emit(step: int, lr: float, figures: tuple[float, float] | None, speed: float | None,
             eta: float | None) -> None:
        loss, err = _figures_text(figures)
        sys.stderr.write(f"{label}: iter {step:,}/{total:,} ({100 * step / total:.0f}%), lr {lr:.4g}, loss {loss}, "
                         f"err {err}, {f'{speed:,.0f}' if speed else '—'} img/s, ETA {_clock(eta)}\n")
        sys.stderr.flush()

    return emit


@contextmanager
def progress_bar(label: str, total: int, start: int, batch_size: int, lr: float, enabled: bool = True,
                 errors: bool = True):
    """A :class:`Progress` (None if not ``enabled``): a rich bar if stderr is a terminal, plain lines if not.
    ``errors`` False: the family counts no training errors (detection), shown as "—"."""
    if not enabled:
        yield None
        return
    import os

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    console = Console(stderr=True)
    if start:  # a rerun that picked up a checkpoint says so, before the bar shows it only as a number
        console.print(f"resuming from iteration {start:,}", highlight=False)
    if not console.is_terminal:
        every = float(os.environ.get("RESREPRO_PROGRESS_SECONDS", LINE_EVERY_S))
        progress = Progress(total, start, batch_size, every, plain_line(label, total), errors)
        yield progress
        progress.close()
        return

    class ImagesPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed * batch_size:.0f} img/s" if task.speed else "— img/s")

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(),
               TextColumn("lr {task.fields[lr]} loss {task.fields[loss]} err {task.fields[error]}"),
               ImagesPerSecond(), TimeRemainingColumn()]
    with RichProgress(*columns, console=console) as p:
        # "—" until the first figures arrive: a NaN would read like a diverged run.
        task = p.add_task("train", total=total, completed=start, lr=f"{lr:.4g}", loss="—", error="—")

        def update(step, lr, figures, speed, eta) -> None:
            loss, err = _figures_text(figures)
            p.update(task, completed=step, lr=f"{lr:.4g}", loss=loss, error=err)

        progress = Progress(total, start, batch_size, BAR_EVERY_S, update, errors)
        yield progress
        progress.close()
