"""Resumable, rank-independent sampling for datasets decoded by loader workers: each sample's augmentation
seeded by (run seed, epoch, index), and an epoch's order a function of (seed, epoch, rank) alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


class SeededDataset(Dataset):
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


class EpochSampler(Sampler):
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
            # Modulo 2**64, the seeds torch takes: a run seed up to 2**32-1 would pass it; below it, unchanged.
            yield i, ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i) % 2**64
