"""The paper's CIFAR-10 learning-rate schedule as a plain function of the iteration (§4.2).

lr 0.1, divided by 10 at 32k and 48k iterations. ResNet-110 warms up at 0.01 "until the training error is
below 80% (about 400 iterations), and then go[es] back to 0.1". The drops stay at absolute iterations: the
warm-up does not shift them (timm's step scheduler would), and releasing it restores exactly the base lr
(a peer bug left a chained scheduler at 0.01 for good).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Schedule:
    lr: float = 0.1
    milestones: tuple[int, ...] = (32_000, 48_000)
    decay: float = 0.1
    warmup: bool = False
    warmup_lr: float = 0.01
    warmup_until_error: float = 0.8
    # The release test uses the mean error of the last few mini-batches: one lucky batch should not end it.
    window: int = 10
    released_at: int | None = None  # iteration at which the warm-up ended
    _recent: deque = field(default_factory=deque, repr=False)

    @property
    def warming_up(self) -> bool:
        return self.warmup and self.released_at is None

    def lr_at(self, step: int) -> float:
        """The lr used for the update at iteration ``step`` (0-based)."""
        if self.warming_up:
            return self.warmup_lr
        return self.lr * self.decay ** bisect_right(self.milestones, step)

    def observe(self, step: int, batch_error: float) -> None:
        """Feed the training error of the mini-batch of iteration ``step``; may end the warm-up."""
        if not self.warming_up:
            return
        self._recent.append(batch_error)
        if len(self._recent) > self.window:
            self._recent.popleft()
        if len(self._recent) == self.window and sum(self._recent) / self.window < self.warmup_until_error:
            self.released_at = step + 1

    def state_dict(self) -> dict[str, Any]:
        return {"released_at": -1 if self.released_at is None else self.released_at, "recent": list(self._recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.released_at = None if state["released_at"] < 0 else int(state["released_at"])
        self._recent = deque(float(e) for e in state["recent"])
