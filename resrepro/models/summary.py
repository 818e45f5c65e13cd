"""One row per registered architecture: its counts beside the paper's figures."""

from __future__ import annotations

from typing import Any

import torch

from resrepro.models.counting import count_macs, count_params
from resrepro.models.registry import ModelSpec, list_models


def model_counts(spec: ModelSpec, *, width: int | None = None,
                 input_size: tuple[int, int, int] | None = None) -> tuple[int, int]:
    """(params, multiply-adds) of one architecture, counted on the meta device: no memory, no compute.

    ``width`` builds it as a run of another width does (the tiny scale's 8 filters); ``input_size`` counts
    multiply-adds on other images than the paper's (default: 3×32×32 CIFAR, 3×224×224 ImageNet)."""
    with torch.device("meta"):
        model = spec.build(**({} if width is None else {"width": width}))
        return count_params(model), count_macs(model, input_size or spec.input_size)


def model_table(family: str | None = None) -> list[dict[str, Any]]:
    rows = []
    for spec in list_models(family, deviations=True):  # every name `resolve` takes, vgg16-bn included
        params, macs = model_counts(spec)
        rows.append({
            "name": spec.name,
            "family": spec.family,
            "layers": spec.depth,
            "plain": spec.plain,
            "shortcut": None if spec.plain else spec.shortcut,
            "stride": None if spec.arch == "vgg" else "1x1 (v1)" if spec.stride_in_1x1 else "3x3 (v1.5)",
            "params": params,
            "macs": macs,
            "paper_params": spec.paper_params,
            "paper_macs": spec.paper_macs,
        })
    return rows
