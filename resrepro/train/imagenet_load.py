"""Models to evaluate on ImageNet: a trained run of ours, or a torchvision/timm model for calibration."""

from __future__ import annotations

from pathlib import Path

import torch

from resrepro.errors import ResreproError
from resrepro.train.checkpoint import load_checkpoint
from resrepro.train.imagenet_spec import ImageNetSpec
from resrepro.train.rundir import RunDir


def is_imagenet_run(path: str | Path) -> bool:
    """Whether a run directory (its config.json) or checkpoint file holds an ImageNet run."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").exists():
        return RunDir(path).read_config().get("family") == "imagenet"
    return path.is_file() and load_checkpoint(path)["spec"].get("family") == "imagenet"


def load_trained_imagenet(path: str | Path) -> tuple[ImageNetSpec, torch.nn.Module]:
    """The spec and trained model (eval mode, CPU) of an ImageNet run directory or checkpoint file."""
    from resrepro.models.registry import resolve
    from resrepro.train.checkpoint import clean_state_dict

    state = load_checkpoint(path)
    spec = ImageNetSpec.from_dict(state["spec"])
    model = resolve(spec.model).build(num_classes=int(state["num_classes"]), width=spec.width)
    model.load_state_dict(clean_state_dict(state["model"]))
    return spec, model.eval()


def import_model(name: str, weights: str | Path | None = None) -> torch.nn.Module:
    """``torchvision:resnet50`` or ``timm:resnet50``, randomly initialised unless ``weights`` (a local state
    dict file) is given: nothing is ever downloaded."""
    from resrepro.train.checkpoint import clean_state_dict

    library, _, arch = name.partition(":")
    if library == "torchvision" and arch:
        import torchvision

        try:
            model = torchvision.models.get_model(arch, weights=None)
        except ValueError as e:
            raise ResreproError(f"--import {name}: {e}") from None
    elif library == "timm" and arch:
        import timm

        if not timm.is_model(arch):
            raise ResreproError(f"--import {name}: timm has no model {arch!r}")
        model = timm.create_model(arch, pretrained=False)
    else:
        raise ResreproError(f"--import takes torchvision:NAME or timm:NAME (e.g. torchvision:resnet50), got {name!r}")
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as e:
            raise ResreproError(f"cannot read --weights {weights}: {e}") from None
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        try:
            model.load_state_dict(clean_state_dict(state))
        except (RuntimeError, AttributeError) as e:
            raise ResreproError(f"--weights {weights} do not fit {name}: {str(e).splitlines()[0]}") from None
    return model.eval()
