"""What a family of runs supplies: to the one training loop a :class:`Recipe` (model, batches, evaluation,
summary), and to the rest of resrepro a :class:`Family` entry (spec type, rebuilding a trained net, evaluation
protocols, what the sweep and the planner need). The loop owns everything else — schedule, divergence guard,
checkpoints, signals, DDP stops, metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from resrepro.train.schedule import Schedule
from resrepro.train.spec import RunSpec


class Batches(Protocol):
    """Endless training batches ``(images, labels)`` on the device, resumable from ``state_dict()``. Detection:
    a list of images and a list of their targets."""

    skipped: int  # images that failed to decode so far (0 for in-memory data)

    def __next__(self) -> tuple[Any, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...


def classification_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the mini-batch, and its top-1 misses (counted outside autocast: argmax is exact)."""
    out = model(x)
    return F.cross_entropy(out, y), (out.argmax(1) != y).sum()


@dataclass
class Recipe:
    build_model: Callable[[], nn.Module]  # called right after torch.manual_seed(spec.seed)
    batches: Callable[[int, dict[str, Any] | None], Batches]  # from iteration `step`, with a saved state
    schedule: Schedule
    train_images: int  # one epoch, for the fractional epoch of each metrics row
    eval_split: str  # "test", or "val"
    evaluate: Callable[[nn.Module], dict[str, Any]]  # Tally.result() of the eval split, model in eval mode
    finish: Callable[[nn.Module], dict[str, Any]]  # more `final` fields once training has ended
    model_info: dict[str, int]  # what rebuilding the net needs: num_classes, in_channels
    # More top-level summary fields, given the images that failed to decode in training (all ranks).
    summary: Callable[[int], dict[str, Any]] = field(default=lambda skipped: {})
    # The training loss of one (micro-)batch, and its misses (a 0-d tensor), from the model as the loop calls
    # it (DDP-wrapped, compiled). Run under autocast; the loop scales the loss and calls backward().
    loss: Callable[[nn.Module, Any, Any], tuple[torch.Tensor, torch.Tensor]] = classification_loss
    counts_errors: bool = True  # False: misses mean nothing (detection); train_error is logged as empty
    # BN groups (micro-batches) each process computes per step (resrepro.train.groups.micro_batches).
    micro_batches: int = 1
    # Whether a run resumed on another number of processes computes what it would have on the same number (the
    # same BN groups and data order); if not, such a resume is refused.
    same_across_worlds: bool = True
    # What to change when a training step runs out of GPU memory: the end of the loop's one-line error.
    out_of_memory: str = "train on more GPUs (torchrun --nproc-per-node N), each taking a share of the batch"


def endless(make_epoch: Callable[[int, int], Iterator[Any]], step: int, steps_per_epoch: int) -> Iterator[Any]:
    """Epoch after epoch of ``make_epoch(epoch, first_batch)``, starting at iteration ``step``."""
    epoch, start = divmod(step, steps_per_epoch)
    while True:
        yield from make_epoch(epoch, start)
        epoch, start = epoch + 1, 0


@dataclass(frozen=True)
class EvalOptions:
    """What `resrepro eval` asks of one trained run; a family refuses, in one line, what it does not take."""

    path: str  # the run directory or checkpoint, for messages
    device: torch.device
    split: str | None = None  # CIFAR: "test" or "val" (None: the run's own)
    protocol: str | None = None  # one of the family's protocols (None: its default)
    data_dir: str | Path | None = None  # where the data are now (None: where the run read them)
    max_images: int | None = None
    scales: Sequence[int] | None = None
    workers: int | None = None
    tally: Any = None  # the caller's Tally: keeps each image's probabilities (ensembles), counts top-5 on CIFAR


def _no_images(spec: RunSpec) -> int:
    raise NotImplementedError(f"the {spec.family} family declares no image size")


@dataclass(frozen=True)
class Family:
    """One family of runs as the rest of resrepro sees it. Declared once, at the end of its recipe module, and
    registered in :mod:`resrepro.train.families`, the only place that tells families apart: code elsewhere asks
    the entry (``family_of(spec).protocols``), never which family a spec is."""

    name: str  # config.json's "family"
    spec: type[RunSpec]
    # (spec, device, channels_last, rank, world) -> the run's recipe; loads (or checks) the data first, so it
    # raises before anything is written.
    recipe: Callable[[Any, torch.device, bool, int, int], Recipe]
    # The untrained net a checkpoint of the spec fits, given the checkpoint's state (its classes and channels).
    build: Callable[[Any, dict[str, Any]], nn.Module]
    # The trained net's result on the run's test data; a result of a protocol that `keeps_eval` is written to
    # RUN/eval/<protocol>.json by the one evaluate_run.
    evaluate: Callable[[Any, nn.Module, EvalOptions], dict[str, Any]]
    protocols: tuple[str, ...] = ("center",)  # what `eval --protocol` takes for a run of this family
    keeps_eval: bool = False  # protocol results are kept in RUN/eval/ for the tables (and made by the sweep)
    # The table columns of one kept protocol result: column suffix -> result key (fractions, shown in percent).
    eval_columns: tuple[tuple[str, str], ...] = (("top1", "top1_error"), ("top5", "top5_error"))
    # A spec field naming the run directory this run starts from (a detector's backbone run): an experiment
    # names it relative to the runs root, and a sweep trains it first.
    upstream: str | None = None
    # For the planner's time estimates: the side of the images one training step sees, and which
    # `resrepro bench --family` measures a comparable step (None: none does).
    image_size: Callable[[Any], int] = _no_images
    bench: str | None = None
    # Every training batch (and in-training validation batch) has one shape, so on CUDA cudnn.benchmark times the
    # convolution kernels once and keeps the fastest. Not for variable shapes (detection's image sizes,
    # multi-scale testing): each new shape would be timed again.
    fixed_shapes: bool = False
    # NHWC activations by default on a CPU too (CUDA always has them by default): only where every net and size
    # of the family was measured faster there and trains forward and backward as exactly as in NCHW. CIFAR's 6n+2
    # nets stepped 1.19-1.25x faster in `resrepro bench` (Xeon, EPYC); torch 2.14.1's NHWC backward of the
    # ImageNet stem crashes (ResNet-18 of width 8 on 224-px crops: "double free or corruption").
    channels_last_on_cpu: bool = False

    def evaluations(self, wanted: Iterable[str]) -> tuple[str, ...]:
        """The protocols among ``wanted`` (what an experiment's tables read) that a sweep evaluates a finished run
        of this family under, once, into RUN/eval/."""
        return tuple(p for p in wanted if p in self.protocols) if self.keeps_eval else ()
