"""ImageNet training (§3.4): ``ImageNetSpec`` and ``train_imagenet``, in one process or one per GPU under
torchrun (DDP, BN statistics per GPU as in the paper: no SyncBN). Same run directory as the CIFAR loop."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from resrepro.data.imagenet import check_num_classes, imagenet_loaders, skip_none_collate
from resrepro.errors import ResreproError
from resrepro.train.checkpoint import load_checkpoint, save_checkpoint, unwrap
from resrepro.train.imagenet_spec import ImageNetSpec, data_root
from resrepro.train.loop import (
    Diverged,
    TrainingInterrupted,
    _peak_rss,
    _progress,
    autocast,
    resolve_device,
    stop_requests,
)
from resrepro.train.provenance import provenance
from resrepro.train.rundir import CONFIG, RunDir
from resrepro.train.schedule import Schedule

STOP_CHECK_EVERY = 20  # steps between the ranks' agreement on a stop request (see _agreed_stop)


def init_distributed(local_rank: int, device: str = "auto") -> str:
    """Join torchrun's process group (its env:// rendezvous); return this process's device."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return f"cuda:{local_rank}" if dev.type == "cuda" else str(dev)


class _Seeded(Dataset):
    """Each sample's augmentation comes from its own seed (run seed, epoch, index): the same crops whatever
    the number of GPUs or loader workers, and an exact resume mid-epoch without replaying it."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            # The CPU generator alone (the transforms draw from it): torch.manual_seed also queues seeds for
            # the accelerators, recording a stack trace each time, ~1.5 ms per image on a CPU-only machine.
            torch.default_generator.manual_seed(seed)
            return self.base[index]


class _EpochSampler(Sampler):
    """This rank's share of one epoch's permutation (DistributedSampler's), from sample ``start`` on."""

    def __init__(self, base: Dataset, seed: int, epoch: int, rank: int, world: int, start: int = 0) -> None:
        shard = DistributedSampler(base, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        shard.set_epoch(epoch)
        self.indices = list(shard)[start:]
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.indices:
            yield i, (self.seed * 1_000_003 + self.epoch) * 10_000_019 + i


def _reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
    return t


def _agreed_stop(requested: bool, step: int, world: int, device: torch.device) -> bool:
    """Whether to checkpoint and stop after ``step``, the same answer on every rank.

    A rank that stopped alone would leave the others waiting in the next collective. The ranks agree every
    STOP_CHECK_EVERY steps, not every step: reading the all-reduced flag would stall the GPU queue each step.
    A stop requested in between (SIGTERM/Ctrl-C reach the ranks at different steps) waits for the next one.
    """
    if world == 1:
        return requested
    if step % STOP_CHECK_EVERY:
        return False
    return bool(_reduce(torch.tensor(float(requested), device=device), world).item())


@torch.no_grad()
def _validate(model, val_set, spec: ImageNetSpec, device, rank: int, world: int, batch: int) -> dict[str, float]:
    """Center-crop val loss, top-1 and top-5 error; each rank takes every world-th image, no padding."""
    model.eval()
    loader = DataLoader(Subset(val_set, range(rank, len(val_set), world)), batch_size=batch,
                        num_workers=spec.workers, collate_fn=skip_none_collate, pin_memory=device.type == "cuda")
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1 wrong, top-5 wrong, images
    for b in loader:
        if b is None:
            continue
        x, y = b[0].to(device, non_blocking=True), b[1].to(device, non_blocking=True)
        with autocast(spec, device):
            out = model(x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x).float()
        top = out.topk(min(5, out.shape[1]), dim=1).indices
        sums += torch.stack([F.cross_entropy(out, y, reduction="sum"), (top[:, 0] != y).sum(),
                             (top != y[:, None]).all(dim=1).sum(), torch.tensor(len(y), device=device)]).double()
    model.train()
    loss, top1, top5, n = _reduce(sums, world).tolist()
    if n == 0:
        raise ResreproError("no val image could be decoded; check DATA_DIR/val")
    return {"loss": loss / n, "top1": top1 / n, "top5": top5 / n}


def train_imagenet(spec: ImageNetSpec, run_dir: str | Path, *, progress: bool = False,
                   on_step: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume, or skip if finished) one ImageNet run into ``run_dir``; returns its summary.

    Under torchrun (after ``init_distributed``) every process calls this; only rank 0 writes files.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    main = rank == 0
    run = RunDir(run_dir)
    if main:
        _claim(run, spec, write=True)
    if world > 1:  # the others check config.json only once rank 0 has written it
        dist.barrier()
        if not main:
            _claim(run, spec, write=False)
    if run.is_finished():
        return run.read_summary()
    if spec.batch_size % (world * spec.accumulate):
        raise ResreproError(f"--batch-size {spec.batch_size} must divide into {world} processes × "
                            f"{spec.accumulate} micro-batches")
    per_rank = spec.batch_size // world
    device = resolve_device(spec.device)
    cuda = device.type == "cuda"
    train_loader, val_loader = imagenet_loaders(data_root(spec), per_rank, workers=spec.workers,
                                                normalize=spec.normalize, seed=spec.seed, scale=spec.scale,
                                                crop=spec.crop)
    train_set, val_set = train_loader.dataset, val_loader.dataset
    num_classes = spec.num_classes or len(train_set.classes)
    check_num_classes(num_classes, train_set.classes)
    steps_per_epoch = len(train_set) // world // per_rank
    if steps_per_epoch < 1:
        raise ResreproError(f"{len(train_set)} training images do not fill one batch of {spec.batch_size}")

    from resrepro.models.registry import resolve

    torch.manual_seed(spec.seed)
    model = resolve(spec.model).build(num_classes=num_classes, width=spec.width).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                                weight_decay=spec.weight_decay)
    schedule = Schedule(spec.lr, spec.milestones, spec.lr_decay)
    step, wall, rows = 0, 0.0, []
    accum = {"loss": 0.0, "wrong": 0.0, "images": 0.0, "seconds": 0.0, "skipped": 0.0}
    if run.checkpoint.exists():
        state = load_checkpoint(run.checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        step, wall, accum = int(state["step"]), float(state["wall_s"]), dict(state["accum"])
        rows = [r for r in run.read_metrics() if r["iter"] <= step]
    ddp = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    compiled = torch.compile(ddp) if (spec.compile if spec.compile is not None else cuda) else ddp

    def batches() -> Iterator[Any]:
        epoch, start = divmod(step, steps_per_epoch)
        while True:
            sampler = _EpochSampler(train_set, spec.seed, epoch, rank, world, start * per_rank)
            yield from DataLoader(_Seeded(train_set), batch_size=per_rank, sampler=sampler, drop_last=True,
                                  num_workers=spec.workers, collate_fn=skip_none_collate, pin_memory=cuda,
                                  generator=torch.Generator().manual_seed(spec.seed))
            epoch, start = epoch + 1, 0

    sums = torch.zeros(3, dtype=torch.float64, device=device)  # this interval's loss, wrong, images
    stream, skipped_before = batches(), train_set.skipped
    interval_start = time.perf_counter()
    bar = _progress(spec, step) if progress and main else nullcontext(None)
    compiled.train()
    with stop_requests() as stop, bar as live:
        while step < spec.iters:
            lr = schedule.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            b = next(stream)
            if b is None:
                raise ResreproError("every image of a training batch failed to decode; check DATA_DIR/train")
            x, y = b[0].to(device, non_blocking=True), b[1].to(device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            for j in range(spec.accumulate):
                # Strided micro-batches: micro-batch j holds what rank j would get with `accumulate` ranks.
                xj, yj = x[j::spec.accumulate], y[j::spec.accumulate]
                sync = j == spec.accumulate - 1 or world == 1
                with (nullcontext() if sync else ddp.no_sync()), autocast(spec, device):
                    out = compiled(xj)
                    loss = F.cross_entropy(out, yj, reduction="sum") / len(y)
                loss.backward()
                sums += torch.stack([loss.detach().double() * len(y), (out.argmax(1) != yj).sum().double(),
                                     torch.tensor(float(len(yj)), device=device, dtype=torch.float64)])
            optimizer.step()
            step += 1
            if live is not None and (step % 20 == 0 or step == spec.iters):  # the last micro-batch's numbers
                live.update(step, lr, F.cross_entropy(out.detach().float(), yj).item(),
                            (out.argmax(1) != yj).float().mean().item())
            stopping = _agreed_stop(stop["signal"] is not None, step, world, device)
            evaluating = step % spec.eval_every == 0 or step == spec.iters
            if not (evaluating or stopping or step % spec.checkpoint_every == 0):
                continue
            elapsed = time.perf_counter() - interval_start
            loss_sum, wrong_sum, images = _reduce(sums, world).tolist()
            skipped = _reduce(torch.tensor(float(train_set.skipped - skipped_before), device=device), world).item()
            sums.zero_()
            skipped_before = train_set.skipped
            wall += elapsed
            accum = {"loss": accum["loss"] + loss_sum, "wrong": accum["wrong"] + wrong_sum,
                     "images": accum["images"] + images, "seconds": accum["seconds"] + elapsed,
                     "skipped": accum["skipped"] + skipped}
            if not math.isfinite(accum["loss"]):
                raise Diverged(f"loss became {accum['loss']} before iteration {step}; the last good checkpoint "
                               f"({run.checkpoint}) is kept — try a lower --lr")
            if evaluating:
                for buf in model.buffers():  # BN running statistics: evaluate (and save) rank 0's everywhere
                    if world > 1:
                        dist.broadcast(buf, 0)
                val = _validate(model, val_set, spec, device, rank, world, per_rank)
                n = max(accum["images"], 1)
                row = {"iter": step, "epoch": step * spec.batch_size / len(train_set), "lr": lr,
                       "train_loss": accum["loss"] / n, "train_error": accum["wrong"] / n, "eval_split": "val",
                       "eval_loss": val["loss"], "eval_error": val["top1"], "eval_top5_error": val["top5"],
                       "images_per_s": accum["images"] / accum["seconds"] if accum["seconds"] else None,
                       "wall_s": wall}
                rows.append(row)
                accum.update(loss=0.0, wrong=0.0, images=0.0, seconds=0.0)
                if on_step is not None:
                    on_step(step, row)
                if main:
                    run.write_metrics(rows)
            if main and (step % spec.checkpoint_every == 0 or step == spec.iters or stopping):
                save_checkpoint(run.checkpoint, {
                    "spec": spec.to_dict(), "config_hash": spec.config_hash(), "step": step, "wall_s": wall,
                    "num_classes": num_classes, "in_channels": 3, "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "accum": dict(accum),
                    "rng": {"torch": torch.get_rng_state()}})
            if stopping:
                raise TrainingInterrupted(f"stopped at iteration {step}; checkpoint saved in {run.path} — "
                                          "rerun the same command to resume")
            interval_start = time.perf_counter()

    last = rows[-1]
    summary = {
        "status": "finished", "family": "imagenet", "model": spec.model, "dataset": spec.dataset,
        "seed": spec.seed, "config_hash": spec.config_hash(), "iter": step,
        "final": {"train_error": last["train_error"], "train_loss": last["train_loss"], "eval_split": "val",
                  "eval_error": last["eval_error"], "eval_loss": last["eval_loss"],
                  "eval_top5_error": last.get("eval_top5_error"), "eval_protocol": "center"},
        "skipped_images": {"train": int(accum["skipped"]), "val": val_set.skipped},
        "world_size": world, "wall_s": wall, "images_per_s": step * spec.batch_size / wall if wall else None,
        "ms_per_iter": 1000 * wall / step if step else None,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if cuda else _peak_rss(),
        "params": sum(p.numel() for p in model.parameters()), "provenance": provenance(device),
    }
    if main:
        run.write_summary(summary)
    return summary


def _claim(run: RunDir, spec: ImageNetSpec, *, write: bool) -> None:
    """Write config.json (``write``), or check that the run directory holds this same configuration."""
    if (run.path / CONFIG).exists() and (run.has_started() or not write):
        existing = ImageNetSpec.from_dict(run.read_config())
        if existing.config_hash() != spec.config_hash():
            mine = spec.identity()
            shown = ", ".join(f"{k}: {v!r} there, {mine[k]!r} now" for k, v in existing.identity().items()
                              if mine[k] != v)
            raise ResreproError(f"{run.path} holds a different run ({shown}); choose another --out "
                                "directory (nothing was overwritten)")
        return
    if run.path.exists() and any(p.name != CONFIG for p in run.path.iterdir()):
        raise ResreproError(f"{run.path} is not empty and is not a resrepro run; choose another --out")
    if write:  # a config.json alone (RunDir.has_started) is free to take
        run.write_config({**spec.to_dict(), "config_hash": spec.config_hash()})
