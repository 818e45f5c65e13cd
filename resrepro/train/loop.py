"""The training loop of one CIFAR-style run: one function a reader can hold in their head.

Fast path on CUDA (DESIGN.md): data resident on the GPU as uint8 and augmented there, channels_last,
bf16 autocast, torch.compile, and no host sync per step except during the short warm-up.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from resrepro.data.cifar import BatchStream, ImageSet, eval_batches, load_dataset, normalizer
from resrepro.errors import ResreproError
from resrepro.train.build import build_model
from resrepro.train.checkpoint import load_checkpoint, save_checkpoint, unwrap
from resrepro.train.provenance import provenance
from resrepro.train.rundir import CONFIG, RunDir
from resrepro.train.schedule import Schedule
from resrepro.train.spec import RunSpec


class TrainingInterrupted(ResreproError):
    """Ctrl-C or SIGTERM: the checkpoint was saved; rerunning the same command resumes."""


class Diverged(ResreproError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ResreproError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return torch.device(device)


def autocast(spec: RunSpec, device: torch.device):
    bf16 = spec.precision == "bf16" or (spec.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, spec: RunSpec, device: torch.device, mean, std) -> tuple[float, float]:
    """(mean cross-entropy, error fraction) over a whole split, in eval mode, no augmentation."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=device, dtype=torch.float64)
    wrong = torch.zeros((), device=device, dtype=torch.float64)
    cl = device.type == "cuda"
    for x, y in eval_batches(data, spec.eval_batch_size, device=device, mean=mean, std=std, channels_last=cl):
        with autocast(spec, device):
            out = model(x)
        loss += F.cross_entropy(out.float(), y, reduction="sum")
        wrong += (out.argmax(1) != y).sum()
    model.train(was_training)
    n = len(data.labels)
    return loss.item() / n, wrong.item() / n


@contextmanager
def stop_requests():
    """Turn the first SIGINT/SIGTERM into a flag the loop checks after each step (then save and exit)."""
    flag = {"signal": None}

    def handler(signum, frame):
        flag["signal"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train(spec: RunSpec, run_dir: str | Path, *, progress: bool = False,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train (or resume, or skip if finished) one run into ``run_dir``; returns its summary."""
    run = RunDir(run_dir)
    claimed = _holds_this_run(run, spec)
    if claimed and run.is_finished():
        return run.read_summary()

    device = resolve_device(spec.device)
    splits = load_dataset(spec.dataset, spec.data_dir, val_split=spec.val_split, verify=spec.verify)
    mean, std = normalizer(splits.train, spec.normalize)
    c = splits.train.images.shape[1]

    torch.manual_seed(spec.seed)
    model = build_model(spec, splits.train.num_classes, c).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                                weight_decay=spec.weight_decay, **({"fused": True} if cuda else {}))
    schedule = Schedule(spec.lr, spec.milestones, spec.lr_decay, spec.uses_warmup, spec.warmup_lr,
                        spec.warmup_until_error)
    stream = BatchStream(splits.train, spec.batch_size, device=device, seed=spec.seed, augment=spec.augment,
                         pad=spec.pad, mean=mean, std=std, channels_last=cuda)
    step, wall, accum, rows = 0, 0.0, _zero_accum(), []
    if run.checkpoint.exists():
        state = load_checkpoint(run.checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        stream.load_state_dict(state["stream"])
        torch.set_rng_state(state["rng"]["torch"])
        if cuda and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        step, wall, accum = int(state["step"]), float(state["wall_s"]), dict(state["accum"])
        rows = [r for r in run.read_metrics() if r["iter"] <= step]
    saved_at = step if run.checkpoint.exists() else None  # the iteration of the last good checkpoint
    if not claimed:  # only now: a run that cannot start (missing data, a bad setting) leaves no config behind
        run.write_config({**spec.to_dict(), "config_hash": spec.config_hash()})
    compiled = torch.compile(model) if (spec.compile if spec.compile is not None else cuda) else model

    def checkpoint_state() -> dict[str, Any]:
        return {
            "spec": spec.to_dict(), "config_hash": spec.config_hash(), "step": step, "wall_s": wall,
            "num_classes": splits.train.num_classes, "in_channels": c,
            "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "stream": stream.state_dict(), "accum": dict(accum),
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None},
        }

    writer = _tensorboard(run) if spec.tensorboard else None
    bar = _progress(spec, step) if progress else nullcontext(None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    wrong_sum = torch.zeros((), device=device, dtype=torch.float64)
    interval_start, interval_images = time.perf_counter(), 0
    compiled.train()
    with stop_requests() as stop, bar as live:
        while step < spec.iters:
            lr = schedule.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = next(stream)
            with autocast(spec, device):
                out = compiled(x)
                loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            wrong = (out.argmax(1) != y).sum()
            loss_sum += loss.detach() * len(y)
            wrong_sum += wrong
            if schedule.warming_up:  # the only per-step host sync, for the first few hundred steps
                schedule.observe(step, wrong.item() / len(y))
            step += 1
            interval_images += len(y)
            if live is not None and (step % 20 == 0 or step == spec.iters):
                live.update(step, lr, loss.item(), wrong.item() / len(y))
            if step % spec.eval_every == 0 or step == spec.iters or stop["signal"] is not None:
                elapsed = time.perf_counter() - interval_start
                wall += elapsed
                accum["loss"] += loss_sum.item()
                accum["wrong"] += wrong_sum.item()
                accum["images"] += interval_images
                accum["seconds"] += elapsed
                loss_sum.zero_()
                wrong_sum.zero_()
                # Checked here, once per interval, not per step: a per-step check is a host sync that stalls
                # the GPU's queue. Checking the weights as well as the losses catches an update that broke
                # them on the interval's last step, so a non-finite state is never logged or checkpointed.
                if not (math.isfinite(accum["loss"]) and _all_finite(model, optimizer)):
                    what = (f"the loss became {accum['loss'] / max(accum['images'], 1)}"
                            if not math.isfinite(accum["loss"]) else "the weights became NaN/inf")
                    kept = ("no checkpoint had been written yet" if saved_at is None else
                            f"the last good checkpoint ({run.checkpoint}, iteration {saved_at}) is kept")
                    raise Diverged(f"{what} before iteration {step}; {kept} — try a lower --lr")
                if step % spec.eval_every == 0 or step == spec.iters:
                    epoch = step * spec.batch_size / len(splits.train.labels)  # fractional, for smooth x axes
                    row = _metrics_row(step, round(epoch, 4), lr, accum, wall, splits.eval_split,
                                       evaluate(compiled, splits.eval, spec, device, mean, std))
                    rows.append(row)
                    accum = _zero_accum()
                    if writer is not None:
                        for k in ("train_loss", "train_error", "eval_loss", "eval_error", "lr", "images_per_s"):
                            writer.add_scalar(k, row[k], step)
                    if on_step is not None:
                        on_step(step, row)
                    run.write_metrics(rows)
                if step % spec.checkpoint_every == 0 or step == spec.iters or stop["signal"] is not None:
                    save_checkpoint(run.checkpoint, checkpoint_state())
                    saved_at = step
                if stop["signal"] is not None:
                    raise TrainingInterrupted(
                        f"stopped by signal {stop['signal']} at iteration {step}; checkpoint saved in {run.path} — "
                        "rerun the same command to resume")
                interval_start, interval_images = time.perf_counter(), 0

    train_loss, train_err = evaluate(compiled, splits.train, spec, device, mean, std)
    last = rows[-1]
    summary = {
        "status": "finished", "model": spec.model, "dataset": spec.dataset, "seed": spec.seed,
        "config_hash": spec.config_hash(), "iter": step,
        "final": {"train_error": last["train_error"], "train_loss": last["train_loss"],
                  "eval_error": last["eval_error"], "eval_loss": last["eval_loss"],
                  "eval_split": splits.eval_split, "train_eval_error": train_err, "train_eval_loss": train_loss},
        "warmup_released_at": schedule.released_at,
        "wall_s": wall, "images_per_s": step * spec.batch_size / wall if wall else None,
        "ms_per_iter": 1000 * wall / step if step else None,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if cuda else _peak_rss(),
        "params": sum(p.numel() for p in model.parameters()),
        "provenance": provenance(device),
    }
    if writer is not None:
        writer.close()
    run.write_summary(summary)
    return summary


def _holds_this_run(run: RunDir, spec: RunSpec) -> bool:
    """Whether ``run`` already holds this configuration; raise if it holds another run that has started."""
    if (run.path / CONFIG).exists():
        existing = RunSpec.from_dict({k: v for k, v in run.read_config().items() if k != "config_hash"})
        if existing.config_hash() == spec.config_hash():
            return True
        if not run.has_started():
            return False
        diff = {k: (v, spec.identity()[k]) for k, v in existing.identity().items() if spec.identity()[k] != v}
        shown = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        raise ResreproError(f"{run.path} holds a different run ({shown}); choose another --out "
                            "directory (nothing was overwritten)")
    if run.path.exists() and any(run.path.iterdir()):
        raise ResreproError(f"{run.path} is not empty and is not a resrepro run; choose another --out")
    return False


def _all_finite(model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Whether every weight, BN statistic and momentum buffer is finite, with one host sync for all."""
    tensors = [*model.state_dict().values(), *(s["momentum_buffer"] for s in optimizer.state.values()
                                               if s.get("momentum_buffer") is not None)]
    return bool(torch.stack([t.isfinite().all() for t in tensors if t.is_floating_point()]).all())


def _zero_accum() -> dict[str, float]:
    return {"loss": 0.0, "wrong": 0.0, "images": 0, "seconds": 0.0}


def _metrics_row(step, epoch, lr, accum, wall, split, eval_result) -> dict[str, Any]:
    eval_loss, eval_error = eval_result
    n = max(accum["images"], 1)
    return {
        "iter": step, "epoch": epoch, "lr": lr, "train_loss": accum["loss"] / n, "train_error": accum["wrong"] / n,
        "eval_split": split, "eval_loss": eval_loss, "eval_error": eval_error,
        "images_per_s": accum["images"] / accum["seconds"] if accum["seconds"] else None,
        "wall_s": wall,
    }


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _tensorboard(run: RunDir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ResreproError("--tensorboard needs the tensorboard package: "
                            "pip install 'resrepro[tensorboard]'") from None
    return SummaryWriter(str(run.path / "tensorboard"))


class _Bar:
    def __init__(self, progress, task, batch_size):
        self.progress, self.task, self.batch_size = progress, task, batch_size
        self.last = (None, time.perf_counter())

    def update(self, step, lr, loss, error):
        prev_step, prev_t = self.last
        now = time.perf_counter()
        ips = (step - prev_step) * self.batch_size / (now - prev_t) if prev_step is not None else float("nan")
        self.last = (step, now)
        self.progress.update(self.task, completed=step, lr=lr, loss=loss, error=100 * error, ips=ips)


@contextmanager
def _progress(spec: RunSpec, start: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = [TextColumn(f"{spec.model} s{spec.seed}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("lr {task.fields[lr]:.4g} loss {task.fields[loss]:.3f} err {task.fields[error]:.1f}%"
                          " {task.fields[ips]:.0f} img/s"), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not console.is_terminal) as p:
        nan = float("nan")
        task = p.add_task("train", total=spec.iters, completed=start, lr=spec.lr, loss=nan, error=nan, ips=nan)
        yield _Bar(p, task, spec.batch_size)
