"""One training step of the one loop, as training runs it and as `resrepro bench` times it: an SGD step over one
batch in strided micro-batches, under the run's autocast, with the batch's loss, misses and images summed on the
device (read once per interval, never per step)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from resrepro.train.groups import RunningStats
from resrepro.train.runtime import autocast


def make_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float,
                   device: torch.device) -> torch.optim.SGD:
    """The paper's SGD with momentum and weight decay; on CUDA the fused kernel (one launch for all parameters)."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
                           **({"fused": True} if device.type == "cuda" else {}))


class TrainStep:
    """``step(x, y, lr)``: one SGD step; returns the batch's misses (a 0-d tensor on the device).

    ``forward`` is the model as called (DDP-wrapped, compiled); ``ddp`` the DDP module whose gradient all-reduce
    waits for the last micro-batch (None in one process); ``loss(forward, x, y)`` the family's loss and misses.
    Micro-batch j (``x[j::accumulate]``) is one BN group (:mod:`resrepro.train.groups`); ``running`` combines
    the ranks' BN running statistics after each step (None in one process). ``compiled_batch``: the images per
    step that ``forward``'s compiled graph was made for; a batch of any other size (short by an image that failed
    to decode) runs eagerly rather than compiling a second graph."""

    def __init__(self, forward: Callable[..., Any], optimizer: torch.optim.Optimizer,
                 loss: Callable[[Any, Any, Any], tuple[torch.Tensor, torch.Tensor]], precision: str,
                 device: torch.device, accumulate: int = 1, ddp: nn.Module | None = None,
                 running: RunningStats | None = None, compiled_batch: int | None = None) -> None:
        self.forward, self.optimizer, self.loss, self.precision = forward, optimizer, loss, precision
        self.device, self.accumulate, self.ddp, self.running = device, accumulate, ddp, running
        self.compiled_batch = compiled_batch
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # this interval's loss, misses, images

    def __call__(self, x: Any, y: Any, lr: float) -> torch.Tensor:
        eager = self.compiled_batch not in (None, len(y))
        with torch.compiler.set_stance("force_eager") if eager else nullcontext():
            return self._step(x, y, lr)

    def _step(self, x: Any, y: Any, lr: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        wrong = torch.zeros((), device=self.device, dtype=torch.float64)
        with self.running.step() if self.running is not None else nullcontext():
            self._micro_batches(x, y, wrong)
        self.optimizer.step()
        return wrong

    def _micro_batches(self, x: Any, y: Any, wrong: torch.Tensor) -> None:
        accumulate = self.accumulate
        for j in range(accumulate):
            xj, yj = (x, y) if accumulate == 1 else (x[j::accumulate], y[j::accumulate])
            sync = j == accumulate - 1 or self.ddp is None
            with (nullcontext() if sync else self.ddp.no_sync()), autocast(self.precision, self.device):
                batch_loss, misses = self.loss(self.forward, xj, yj)
                loss = batch_loss * (len(yj) / len(y))
            loss.backward()
            wrong += misses
            # The image count stays a host number: torch.tensor(n, device="cuda") would copy from the host (and
            # may wait for the GPU) on every micro-batch.
            self.sums[:2] += torch.stack([loss.detach().double() * len(y), misses.double()])
            self.sums[2] += len(yj)
