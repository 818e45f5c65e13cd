"""The one door to the image sets held in memory: ``load_dataset`` over CIFAR-10, the digits and the synthetic
set, with the paper's 45k/5k protocol of holding out part of the training set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from resrepro.data.cifar10 import load_cifar10
from resrepro.data.pipeline import ImageSet
from resrepro.data.tiny import digits, synthetic
from resrepro.errors import ResreproError

DATASETS = ("cifar10", "synthetic", "digits")
# A constant, not the run's seed: the paper chose its schedule on one 45k/5k split, the same for every run.
VAL_SPLIT_SEED = 1512_03385


@dataclass
class Splits:
    train: ImageSet
    eval: ImageSet
    eval_split: str  # "test", or "val" when part of the training set is held out


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_split: int = 0,
    download: bool = False,
    verify: bool = True,
) -> Splits:
    """Load ``name`` (cifar10, synthetic or digits). ``val_split=N`` holds out N training images, the same
    ones for every seed, as the eval set instead of the test set (the paper's 45k/5k protocol)."""
    if name == "cifar10":
        train, test = load_cifar10(data_dir, download=download, verify=verify)
    elif name in ("synthetic", "digits"):
        train, test = synthetic() if name == "synthetic" else digits()
    else:
        raise ResreproError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if val_split == 0:
        return Splits(train, test, "test")
    if not 0 < val_split < len(train):
        raise ResreproError(f"val_split must be between 0 and {len(train) - 1} for {name}, got {val_split}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    held_out, kept = order[:val_split].sort().values, order[val_split:].sort().values
    return Splits(train.subset(kept, f"{name}/train"), train.subset(held_out, f"{name}/val"), "val")
