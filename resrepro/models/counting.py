"""Parameters and multiply-adds of a model, counted the way the paper counts them."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """All parameters, BN affine included (running statistics are buffers, not parameters)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Forward multiply-adds of conv and FC layers for one image.

    FlopCounterMode counts 2 FLOPs per multiply-add; the paper's "FLOPs" are multiply-adds, hence the halving.
    BN, ReLU, pooling and the shortcut additions are not counted, as in Table 1.
    """
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    x = torch.zeros(1, *input_size, device=param.device if param is not None else None)
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2
