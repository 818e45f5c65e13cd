"""Resumable, rank-independent sampling for datasets decoded by loader workers: each sample's augmentation
seeded by (run seed, epoch, index), and an epoch's global batches a function of (seed, epoch) alone, each
process taking its share of every one."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


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
    """This process's images of one epoch's batches, from batch ``first_batch`` on. The epoch's order is one
    permutation (DistributedSampler's with one replica), cut into global batches of ``batch`` whatever the
    number of processes; ``take`` says which positions of each batch this process gets, in its order (None: all).
    """

    def __init__(self, base: Dataset, seed: int, epoch: int, batch: int, take: list[int] | None,
                 first_batch: int = 0) -> None:
        g = torch.Generator()
        g.manual_seed(seed + epoch)
        order = torch.randperm(len(base), generator=g).tolist()
        end = len(base) // batch  # the last incomplete batch is dropped
        self.indices = (order[first_batch * batch:end * batch] if take is None
                        else [order[b * batch + p] for b in range(first_batch, end) for p in take])
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.indices:
            # Modulo 2**64, the seeds torch takes: a run seed up to 2**32-1 would pass it; below it, unchanged.
            yield i, ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i) % 2**64


class _Current(Sampler):
    """The sampler of the epoch at hand, switched by :class:`EpochLoader`."""

    current: Sampler

    def __len__(self) -> int:
        return len(self.current)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.current)


class EpochLoader:
    """``make_epoch(epoch, first_batch)`` for an endless stream: one DataLoader over ``SeededDataset(dataset)``
    whose sampler becomes each epoch's :class:`EpochSampler`, so its workers (``num_workers`` > 0) start once and
    are kept across epochs instead of forked anew. The batches are those of a DataLoader per epoch: their order and
    each sample's seed come from the sampler alone.

    A DataLoader without a ``generator`` draws its workers' base seed from the global RNG at each new iterator,
    which a reset of kept workers does not: that draw is made here instead, so the global RNG (RoI sampling,
    dropout) sees what it saw with a loader per epoch and runs keep their numbers."""

    def __init__(self, dataset: Dataset, seed: int, batch: int, take: list[int] | None,
                 **loader_kwargs: Any) -> None:
        self.dataset, self.seed, self.batch, self.take = dataset, seed, batch, take
        self.sampler = _Current()
        self.loader = DataLoader(SeededDataset(dataset), batch_size=batch if take is None else len(take),
                                 sampler=self.sampler, drop_last=True,
                                 persistent_workers=loader_kwargs.get("num_workers", 0) > 0,
                                 worker_init_fn=leave_stops_to_the_main_process, **loader_kwargs)
        self.started = False

    def __call__(self, epoch: int, first_batch: int) -> Iterator[Any]:
        self.sampler.current = EpochSampler(self.dataset, self.seed, epoch, self.batch, self.take, first_batch)
        if self.started and self.loader.persistent_workers and self.loader.generator is None:
            torch.empty((), dtype=torch.int64).random_()
        self.started = True
        return iter(self.loader)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


def leave_stops_to_the_main_process(worker_id: int) -> None:
    """A DataLoader worker's ``worker_init_fn``: ignore Ctrl-C, SIGTERM and SIGUSR2. Slurm (preemption, scancel, a
    time limit's warning), systemd and ``kill -TERM -PGID`` signal every process of the group, the loader's workers
    included; a worker killed by SIGTERM made the main process fail at its next batch ("DataLoader worker ... is
    killed by signal: Terminated") instead of saving its checkpoint. The main process alone stops the run, then
    shuts its workers down; a worker whose main process died exits by itself (the loader's watchdog)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
