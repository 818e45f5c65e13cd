"""Library models to evaluate beside ours: torchvision's and timm's, built without weights and loaded from a
local file (nothing is ever downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

from resrepro.errors import ResreproError


def import_model(name: str, weights: str | Path | None) -> torch.nn.Module:
    """``torchvision:resnet50`` or ``timm:resnet50`` with the trained weights in ``weights``, a local state
    dict file. Nothing is ever downloaded; without weights it refuses, as random weights score chance."""
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

        import resrepro.timm_models  # noqa: F401  (registers resrepro_<name>, so timm:resrepro_resnet50 works)

        if not timm.is_model(arch):
            raise ResreproError(f"--import {name}: timm has no model {arch!r}")
        model = timm.create_model(arch, pretrained=False)
    else:
        raise ResreproError(f"--import takes torchvision:NAME or timm:NAME (e.g. torchvision:resnet50), got {name!r}")
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


def classifier_state_from_file(path: str | Path, backbone: str) -> dict[str, torch.Tensor]:
    """A local torchvision ImageNet weights file (``resnet50``/``101``/``152``, which are v1.5: name the backbone
    ``resnet101-v1.5``; ``resnet18``/``34``; ``vgg16``) as the ``classifier_state`` of a detector with that
    backbone, in our names. Their images are normalised by mean and std: build the detector with
    ``normalize="mean-std"``. Anything that does not fit the backbone (at width 64) is one ResreproError."""
    from resrepro.models.detection import backbone_spec, check_classifier_state, classifier_state_from_torchvision
    from resrepro.train.checkpoint import clean_state_dict

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise ResreproError(f"cannot read backbone weights {path}: {e.strerror or e}") from None
    except Exception as e:  # torch raises several types for a file that is no torch.save output
        raise ResreproError(f"backbone weights {path} are not a file written by torch.save ({type(e).__name__}): "
                            f"use torchvision's ImageNet weights for {backbone}") from None
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ResreproError(f"backbone weights {path} hold no state dict (a dict of tensors)")
    state = classifier_state_from_torchvision(clean_state_dict(state), backbone)
    spec = backbone_spec(backbone)
    with torch.device("meta"):  # the shapes alone: no memory, no initialisation
        net = spec.build()
    try:
        check_classifier_state(net, state, spec.arch, f"{spec.name} of width 64")
    except ResreproError as e:
        raise ResreproError(f"{path}: {e}") from None
    return state
