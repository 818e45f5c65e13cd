"""Build a run's model from its spec (the one place that maps RunSpec fields onto constructor arguments)."""

from __future__ import annotations

from torch import nn

from resrepro.models.registry import resolve
from resrepro.train.spec import RunSpec


def build_model(spec: RunSpec, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    model = resolve(spec.model).build(width=spec.width, num_classes=num_classes, in_channels=in_channels)
    model.grad_checkpoint = spec.grad_checkpoint
    return model
