"""Other people's models to evaluate beside ours: akamaster's CIFAR ResNets, torchvision's and timm's nets, and
our own architectures, built without weights and loaded from a local file (nothing is ever downloaded).

A name says the layout: option A's zero channels cannot be told apart by the tensors' shapes (a shortcut has no
parameters), so ``akamaster:`` builds the split layout that project trains and ``resrepro:`` our appended one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from resrepro.errors import ResreproError

if TYPE_CHECKING:
    import torch
    from torch import nn

SOURCES = ("akamaster", "resrepro", "timm", "torchvision")
# The weights akamaster/pytorch_resnet_cifar10 releases, by net.
AKAMASTER_FILES = {"resnet20": "resnet20-12fca82f.th", "resnet32": "resnet32-d509ac18.th",
                   "resnet44": "resnet44-014dd654.th", "resnet56": "resnet56-4bfd9763.th",
                   "resnet110": "resnet110-1d1ed7c2.th", "resnet1202": "resnet1202-f3b1deed.th"}
AKAMASTER_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/tree/master/pretrained_models"


@dataclass(frozen=True)
class Imported:
    """A loaded model and how to feed it."""

    model: nn.Module  # in eval mode
    family: str  # "cifar": a 32-px net for the CIFAR test set; "imagenet": for an ImageFolder's val/
    normalize: str  # how its inputs were normalised in training: data.pipeline.normalizer's mode
    published: float | None = None  # CIFAR-10 test error (%) its project publishes for its released weights


def parse_import(name: str) -> tuple[str, str]:
    """``akamaster:resnet56`` -> (source, architecture), or ResreproError; needs no torch, so the CLI asks first."""
    library, _, arch = name.partition(":")
    if library not in SOURCES or not arch:
        raise ResreproError(f"--import takes {', '.join(f'{s}:NAME' for s in SOURCES)} (e.g. akamaster:resnet56, "
                            f"torchvision:resnet50), got {name!r}")
    return library, arch


def import_model(name: str, weights: str | Path | None) -> Imported:
    """``akamaster:resnet56``, ``resrepro:resnet110``, ``torchvision:resnet50`` or ``timm:resnet50`` with the
    trained weights in ``weights``, a local state-dict file. Without weights it refuses: random ones score chance."""
    from resrepro.train.checkpoint import clean_state_dict

    library, arch = parse_import(name)
    model, family, normalize, rename, describe = _build(library, arch, name)
    if weights is None:
        raise ResreproError(f"--import {name} needs --weights FILE, a local copy of its trained weights: "
                            f"{_weights_file(library, arch)}; random weights would score chance")
    state = _read_state(weights, library, arch)
    state = {rename(k): v for k, v in clean_state_dict(state).items()}
    problem = _mismatch(model.state_dict(), state)
    if problem:
        raise ResreproError(f"--weights {weights} do not fit {name} ({describe}): {problem}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # what _mismatch does not check (a dtype torch cannot copy)
        raise ResreproError(f"--weights {weights} do not fit {name}: {str(e).splitlines()[0]}") from None
    return Imported(model.eval(), family, normalize, _published(library, arch))


def _build(library: str, arch: str, name: str) -> tuple[nn.Module, str, str, object, str]:
    """The untrained model, its family, input normalisation, key renaming and a description for messages."""
    from resrepro.models.registry import resolve

    same = lambda key: key  # noqa: E731
    if library == "akamaster":
        if arch not in AKAMASTER_FILES:
            raise ResreproError(f"--import {name}: akamaster publishes {', '.join(AKAMASTER_FILES)}")
        model = resolve(arch).build(zero_pad="split")
        # Its final layer is `linear`, ours `fc`; its inputs are [0, 1] images normalised by ImageNet statistics.
        rename = lambda key: re.sub(r"^linear\.", "fc.", key)  # noqa: E731
        return model, "cifar", "imagenet", rename, f"a {arch[6:]}-layer CIFAR ResNet, option A zeros split"
    if library == "resrepro":
        spec = resolve(arch)  # a misspelt name: the registry's message, with close matches
        return spec.build(), spec.family, "pixel-mean", same, f"our {spec.name}, option A zeros appended"
    if library == "torchvision":
        import torchvision

        try:
            model = torchvision.models.get_model(arch, weights=None)
        except ValueError as e:
            raise ResreproError(f"--import {name}: {e}") from None
        return model, "imagenet", "mean-std", same, f"torchvision's {arch}"
    import timm

    import resrepro.timm_models  # noqa: F401  (registers resrepro_<name>, so timm:resrepro_resnet50 works)

    if not timm.is_model(arch):
        raise ResreproError(f"--import {name}: timm has no model {arch!r}")
    model = timm.create_model(arch, pretrained=False)
    cfg = timm.models.get_pretrained_cfg(arch)
    family = "cifar" if cfg is not None and tuple(cfg.input_size) == (3, 32, 32) else "imagenet"
    ours = arch.startswith("resrepro_")  # our nets: option A appended, the paper's per-pixel mean
    return model, family, "pixel-mean" if ours else "mean-std", same, f"timm's {arch}"


def _read_state(weights: str | Path, library: str, arch: str) -> dict[str, torch.Tensor]:
    import torch

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except OSError as e:
        raise ResreproError(f"cannot read --weights {weights}: {e.strerror or e}") from None
    except Exception as e:  # torch raises several types for a file that is no torch.save output
        raise ResreproError(f"--weights {weights} is not a file written by torch.save ({type(e).__name__}): "
                            f"{_weights_file(library, arch)}") from None
    spec = state.get("spec") if isinstance(state, dict) else None
    if isinstance(spec, dict) and spec.get("zero_pad", "append") != "append":
        # A checkpoint that says its layout: loading it into the appended one would be the silent error.
        raise ResreproError(f"--weights {weights} is a checkpoint of a run trained with zero_pad "
                            f"{spec['zero_pad']!r}; evaluate it as a run: resrepro eval {weights}")
    # akamaster's .th files: {"state_dict": ..., "best_prec1": ...}; resrepro checkpoints: {"model": ...}.
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ResreproError(f"--weights {weights} holds no state dict (a dict of tensors): "
                            f"{_weights_file(library, arch)}")
    return state


def _mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], shown: int = 3) -> str | None:
    """The first few missing and unexpected keys, else the first shape mismatch, else None."""

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:shown]) + (f" (+{len(keys) - shown} more)" if len(keys) > shown else "")

    # Files written before torch 0.4.1 lack BN's num_batches_tracked, which torch fills in and eval never reads.
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        return "; ".join(f"{what} keys {few(keys)}" for what, keys in (("missing", missing),
                                                                        ("unexpected", unexpected)) if keys)
    for k, v in expected.items():
        if k in given and given[k].shape != v.shape:
            return f"{k} has shape {list(given[k].shape)}, the architecture needs {list(v.shape)}"
    return None


def _published(library: str, arch: str) -> float | None:
    """The CIFAR-10 test error (%) a project publishes for its own released weights (results/paper/calibration)."""
    if library != "akamaster":
        return None
    from resrepro.paper import paper_table

    rows = paper_table("calibration").query("source == @library and model == @arch")
    return float(rows.error.iloc[0]) if len(rows) else None


def _weights_file(library: str, arch: str) -> str:
    """Which file holds a library model's trained weights, for the message that asks for it."""
    if library == "akamaster":
        return f"akamaster's {AKAMASTER_FILES[arch]} ({AKAMASTER_URL})"
    if library == "resrepro":
        return "a state dict saved with torch.save(model.state_dict(), FILE), or a checkpoint `resrepro train` wrote"
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


def torchvision_name(backbone: str) -> str:
    """The torchvision ImageNet net whose weights fit the backbone ``backbone`` (resnet101-v1.5 -> resnet101)."""
    from resrepro.models.detection import backbone_spec

    spec = backbone_spec(backbone)
    return f"resnet{spec.depth}" if spec.arch == "resnet" else spec.name.replace("-", "_")


def classifier_state_from_file(path: str | Path, backbone: str) -> dict[str, torch.Tensor]:
    """A local torchvision ImageNet weights file (``resnet50``/``101``/``152``, which are v1.5: name the backbone
    ``resnet101-v1.5``; ``resnet18``/``34``; ``vgg16``) as the ``classifier_state`` of a detector with that
    backbone, in our names. Their images are normalised by mean and std: build the detector with
    ``normalize="mean-std"``. Anything that does not fit the backbone (at width 64) is one ResreproError."""
    import torch

    from resrepro.models.detection import backbone_spec, check_classifier_state, classifier_state_from_torchvision
    from resrepro.train.checkpoint import clean_state_dict

    spec = backbone_spec(backbone)
    state = classifier_state_from_torchvision(
        clean_state_dict(_read_state(path, "torchvision", torchvision_name(backbone))), backbone)
    with torch.device("meta"):  # the shapes alone: no memory, no initialisation
        net = spec.build()
    try:
        check_classifier_state(net, state, spec.arch, f"{spec.name} of width 64")
    except ResreproError as e:
        raise ResreproError(f"{path}: {e}") from None
    return state
