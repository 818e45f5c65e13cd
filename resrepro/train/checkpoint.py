"""Checkpoints: dicts of tensors and plain types, written atomically, loadable with ``weights_only=True``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resrepro.errors import ResreproError
from resrepro.io import atomic_write
from resrepro.train.rundir import CHECKPOINT

FORMAT = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise ResreproError(f"no checkpoint at {path}: train the run first (or point at a .pt file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise ResreproError(f"checkpoint {path} is corrupt or not a resrepro checkpoint ({type(e).__name__}); "
                            "delete it to restart the run from its last good state") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ResreproError(f"checkpoint {path} holds no model weights: not a resrepro checkpoint")
    return state


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the prefixes DataParallel/DDP (``module.``) and torch.compile (``_orig_mod.``) add."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_trained(path: str | Path, device: str | torch.device = "cpu"):
    """The RunSpec and trained model (eval mode) of a run directory or checkpoint file."""
    from resrepro.train.build import build_model
    from resrepro.train.spec import RunSpec

    state = load_checkpoint(path)
    spec = RunSpec.from_dict(state["spec"])
    classes, channels = int(state.get("num_classes", 10)), int(state.get("in_channels", 3))
    model = build_model(spec, num_classes=classes, in_channels=channels)
    try:
        model.load_state_dict(clean_state_dict(state["model"]))
    except RuntimeError as e:
        raise ResreproError(f"checkpoint {path} does not fit {spec.model}: {str(e).splitlines()[0]}") from None
    return spec, model.to(device).eval()


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)
