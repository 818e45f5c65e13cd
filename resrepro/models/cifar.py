"""The paper's CIFAR-10 nets (§4.2): depth 6n+2, three stages of 2n 3×3 layers on 32/16/8 maps."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from resrepro.models.blocks import BasicBlock, init_weights


class CifarResNet(nn.Module):
    """A 6n+2-layer CIFAR net: 3×3 stem, 3 stages of n basic blocks, global average pool, FC.

    ``width`` is the stem/first-stage filter count (16 in the paper); stages use width, 2·width, 4·width.
    ``in_channels`` and ``num_classes`` default to CIFAR-10's.
    """

    def __init__(
        self,
        n: int,
        *,
        plain: bool = False,
        shortcut: str = "A",
        zero_pad: str = "append",
        num_classes: int = 10,
        width: int = 16,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"n must be >= 1 (depth 6n+2), got {n}")
        self.n, self.plain, self.shortcut = n, plain, shortcut
        # Recompute each stage's activations in the backward pass instead of storing them (for the
        # 1202-layer net on small GPUs); same gradients, more compute.
        self.grad_checkpoint = False
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        kw = dict(plain=plain, shortcut=shortcut, zero_pad=zero_pad)
        stages, in_planes = [], width
        for i, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride, **kw))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    @property
    def depth(self) -> int:
        return 6 * self.n + 2

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for stage in self.stages():
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(stage, x, use_reentrant=False,
                               context_fn=lambda s=stage: (contextlib.nullcontext(), frozen_bn_stats(s)))
            else:
                x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module):
    """Keep BN running statistics unchanged while a checkpointed stage is recomputed.

    Without this, the recompute in the backward pass would update them a second time for the same batch,
    and a checkpointed run would drift from a plain one. The statistics are put back afterwards rather than the
    momentum set to 0: a compiled block would see another momentum and compile a second graph for the recompute.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [[b.clone() for b in m.buffers(recurse=False)] for m in bns]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, kept in zip(bns, saved, strict=True):
                for b, k in zip(m.buffers(recurse=False), kept, strict=True):
                    b.copy_(k)
