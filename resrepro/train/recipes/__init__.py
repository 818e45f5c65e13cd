"""What a family supplies to the one training loop: its model, its batches, its evaluation, its summary.

A recipe is built from a spec once its data are known to be there (so a run that cannot start writes nothing);
the loop owns everything else — schedule, divergence guard, checkpoints, signals, DDP stops, metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from resrepro.train.schedule import Schedule
from resrepro.train.spec import CifarSpec, DetectionSpec, ImageNetSpec, RunSpec


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


def make_recipe(spec: RunSpec, device: torch.device, channels_last: bool, rank: int = 0,
                world: int = 1) -> Recipe:
    """The recipe of the spec's family. Loads (or checks) the data: raises before anything is written."""
    if isinstance(spec, CifarSpec):
        from resrepro.train.recipes.cifar import cifar_recipe

        return cifar_recipe(spec, device, channels_last, world)
    if isinstance(spec, ImageNetSpec):
        from resrepro.train.recipes.imagenet import imagenet_recipe

        return imagenet_recipe(spec, device, channels_last, rank, world)
    if isinstance(spec, DetectionSpec):
        from resrepro.train.recipes.detection import detection_recipe

        return detection_recipe(spec, device, rank, world)
    raise TypeError(f"no recipe for {type(spec).__name__}")


def endless(make_epoch: Callable[[int, int], Iterator[Any]], step: int, steps_per_epoch: int) -> Iterator[Any]:
    """Epoch after epoch of ``make_epoch(epoch, first_batch)``, starting at iteration ``step``."""
    epoch, start = divmod(step, steps_per_epoch)
    while True:
        yield from make_epoch(epoch, start)
        epoch, start = epoch + 1, 0
