"""One row per registered architecture: its counts beside the paper's figures."""

from __future__ import annotations

from typing import Any

import torch

from resrepro.models.counting import count_macs, count_params
from resrepro.models.registry import ModelSpec, list_models


def model_counts(spec: ModelSpec) -> tuple[int, int]:
    """(params, multiply-adds) of one architecture, counted on the meta device: no memory, no compute."""
    with torch.device("meta"):
        model = spec.build()
        return count_params(model), count_macs(model, spec.input_size)


def model_table(family: str | None = None) -> list[dict[str, Any]]:
    rows = []
    for spec in list_models(family):
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
