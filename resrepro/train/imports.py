"""Library models to evaluate beside ours: torchvision's and timm's, built without weights and loaded from a
local file (nothing is ever downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from resrepro.errors import ResreproError

if TYPE_CHECKING:
    import torch


def parse_import(name: str) -> tuple[str, str]:
    """``torchvision:resnet50`` -> (library, architecture), or ResreproError; needs no torch, so the CLI asks first."""
    library, _, arch = name.partition(":")
    if library not in ("torchvision", "timm") or not arch:
        raise ResreproError(f"--import takes torchvision:NAME or timm:NAME (e.g. torchvision:resnet50), got {name!r}")
    return library, arch


def import_model(name: str, weights: str | Path | None) -> torch.nn.Module:
    """``torchvision:resnet50`` or ``timm:resnet50`` with the trained weights in ``weights``, a local state
    dict file. Nothing is ever downloaded; without weights it refuses, as random weights score chance."""
    import torch

    from resrepro.train.checkpoint import clean_state_dict

    library, arch = parse_import(name)
    if library == "torchvision":
        import torchvision

        try:
            model = torchvision.models.get_model(arch, weights=None)
        except ValueError as e:
            raise ResreproError(f"--import {name}: {e}") from None
    else:
        import timm

        import resrepro.timm_models  # noqa: F401  (registers resrepro_<name>, so timm:resrepro_resnet50 works)

        if not timm.is_model(arch):
            raise ResreproError(f"--import {name}: timm has no model {arch!r}")
        model = timm.create_model(arch, pretrained=False)
    if weights is None:
        raise ResreproError(f"--import {name} needs --weights FILE, a local copy of its trained weights: "
                            f"{_weights_file(library, arch)}; random weights would score chance")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except OSError as e:
        raise ResreproError(f"cannot read --weights {weights}: {e.strerror or e}") from None
    except Exception as e:  # torch raises several types for a file that is no torch.save output
        raise ResreproError(f"--weights {weights} is not a file written by torch.save ({type(e).__name__}): "
                            f"{_weights_file(library, arch)}") from None
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ResreproError(f"--weights {weights} holds no state dict (a dict of tensors): "
                            f"{_weights_file(library, arch)}")
    try:
        model.load_state_dict(clean_state_dict(state))
    except (RuntimeError, AttributeError) as e:
        raise ResreproError(f"--weights {weights} do not fit {name}: {str(e).splitlines()[0]}") from None
    return model.eval()


def _weights_file(library: str, arch: str) -> str:
    """Which file holds a library model's ImageNet weights, for the message that asks for it."""
    if library == "torchvision":
        import torchvision

        try:
            url = torchvision.models.get_model_weights(arch).DEFAULT.url
        except (ValueError, AttributeError, KeyError):
            return "a state dict saved with torch.save(model.state_dict(), FILE)"
        return f"torchvision's {url.rsplit('/', 1)[-1]} ({url})"
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    source = f" (Hugging Face {cfg.hf_hub_id})" if cfg is not None and cfg.hf_hub_id else ""
    return f"timm's pretrained {arch}{source} saved with torch.save(model.state_dict(), FILE)"
