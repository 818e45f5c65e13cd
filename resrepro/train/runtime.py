"""Where and how a run computes: device, precision, memory layout, ranks, stop signals, clock, progress, peak
memory."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from resrepro.errors import ResreproError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):  # torch also names meta, xla, ...: none trains here
        raise ResreproError(f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ResreproError(f"--device {device}: no CUDA device is available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ResreproError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s), "
                            f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return dev


def autocast(precision: str, device: torch.device):
    """bf16 autocast where asked, or by default on CUDA; fp32 otherwise."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def use_channels_last(choice: bool | None, device: torch.device) -> bool:
    """NHWC activations: by default on CUDA, where tensor-core convolutions want them. Not by default on a CPU:
    `resrepro bench` times both layouts there (NHWC ran the ResNet-20 step at batch 128 1.19-1.25× faster), but
    torch 2.14's CPU backward aborts on some NHWC shapes (ResNet-18 of width 8 on 224-px crops: "double free or
    corruption"), and a crash an hour into a run costs more than 10% speed. ``--channels-last`` asks for it."""
    return choice if choice is not None else device.type == "cuda"


def use_compile(choice: bool | None, device: torch.device) -> bool:
    return choice if choice is not None else device.type == "cuda"


def all_finite(model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Whether every weight, BN statistic and momentum buffer is finite, with one host sync for all."""
    tensors = [*model.state_dict().values(), *(s["momentum_buffer"] for s in optimizer.state.values()
                                               if s.get("momentum_buffer") is not None)]
    return bool(torch.stack([t.isfinite().all() for t in tensors if t.is_floating_point()]).all())


def peak_memory(device: torch.device) -> int:
    """Peak bytes: allocated on the GPU, or the process's peak resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rng_state(device: torch.device) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None}


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"])


def all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    """Sum ``t`` over the ranks, in place (nothing to do for one process)."""
    if world > 1:
        dist.all_reduce(t)
    return t


def agreed_stop(requested: bool, step: int, world: int, device: torch.device, every: int) -> bool:
    """Whether to checkpoint and stop after ``step``, the same answer on every rank.

    A rank that stopped alone would leave the others waiting in the next collective. The ranks agree every
    ``every`` steps, not every step: reading the all-reduced flag would stall the GPU queue each step.
    A stop requested in between (SIGTERM/Ctrl-C reach the ranks at different steps) waits for the next one.
    """
    if world == 1:
        return requested
    if step % every:
        return False
    return bool(all_reduce(torch.tensor(float(requested), device=device), world).item())


@contextmanager
def stop_requests() -> Iterator[dict[str, int | None]]:
    """Turn the first SIGINT/SIGTERM into a flag the loop checks after each step (then save and exit)."""
    flag: dict[str, int | None] = {"signal": None}

    def handler(signum, frame):
        flag["signal"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def tensorboard() -> type:
    """TensorBoard's SummaryWriter class; asked for before a run writes anything, so a run that cannot log
    where it was told to leaves nothing behind."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ResreproError("--tensorboard needs the tensorboard package: "
                            "pip install 'resrepro[tensorboard]'") from None
    return SummaryWriter


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
