"""Batch-normalisation groups: a run's identity fixes how many images BN normalises together (``bn_group``), and
the launch follows from it. Each global batch is drawn once, whatever the number of processes, and cut into the
same groups; the ranks take consecutive groups, each rank's in micro-batches (gradients accumulated). One GPU or
sixty-four then compute the same net: the same groups, in the same order, up to float rounding."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from resrepro.errors import ResreproError


def micro_batches(batch: int, bn_group: int, world: int) -> int:
    """The BN groups each of ``world`` processes computes per step, one micro-batch each; refused unless the
    batch's groups share out evenly (another grouping would be another net)."""
    groups = batch // bn_group
    if groups % world:
        raise ResreproError(f"{world} processes cannot share a batch of {batch} in BN groups of {bn_group}: its "
                            f"{groups} group(s) must divide among them; train on a number of GPUs that divides "
                            f"{groups}")
    return groups // world


def rank_positions(batch: int, groups: int, rank: int, world: int) -> list[int] | None:
    """Which images of each global batch (positions 0..batch-1 in the order drawn) a rank takes, in the order
    that makes its micro-batch j (``x[j::k]``, k its groups) the global group ``rank * k + j``. Group g is the
    batch's every groups-th image from g on, as one process has always cut it; None: the whole batch, as drawn."""
    if world == 1:
        return None
    k = groups // world
    return [a * groups + rank * k + j for a in range(batch // groups) for j in range(k)]


class RunningStats:
    """BN running statistics over a step's groups on several ranks, equal (up to float rounding) to those one
    process leaves after updating them group after group, in order.

    A running statistic is an exponential average, r <- (1 - m) r + m s, so after groups 0..G-1 it is
    (1 - m)^G r + sum_g m (1 - m)^(G-1-g) s_g: linear in the groups' statistics. Each rank starts its step's
    groups from zero, weights what they left by the groups that come after its own, and one all-reduce adds the
    ranks' shares to the decayed statistics of the step before. DDP's own buffer broadcast (rank 0's statistics
    alone) must be off: it would keep one rank's groups and drop the rest."""

    def __init__(self, model: nn.Module, rank: int, world: int, per_rank: int) -> None:
        self.bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                    and m.track_running_stats and m.momentum is not None]
        self.rank, self.world, self.per_rank = rank, world, per_rank

    @contextmanager
    def step(self) -> Iterator[None]:
        if self.world == 1 or not self.bns:  # one process updates them itself, group after group
            yield
            return
        before = [(m.running_mean.clone(), m.running_var.clone()) for m in self.bns]
        for m in self.bns:
            m.running_mean.zero_()
            m.running_var.zero_()
        yield
        groups, later = self.per_rank * self.world, self.per_rank * (self.world - 1 - self.rank)
        shares = torch.cat([torch.cat([m.running_mean, m.running_var]) * (1 - m.momentum) ** later
                            for m in self.bns])
        dist.all_reduce(shares)
        offset = 0
        for m, (mean, var) in zip(self.bns, before, strict=True):
            n, decay = len(mean), (1 - m.momentum) ** groups
            m.running_mean.copy_(shares[offset:offset + n] + decay * mean)
            m.running_var.copy_(shares[offset + n:offset + 2 * n] + decay * var)
            m.num_batches_tracked.add_(groups - self.per_rank)  # each rank counted its own groups only
            offset += 2 * n
