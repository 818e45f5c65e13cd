"""The family registry: the one place that knows which families of runs exist (CIFAR §4.2, ImageNet §3.4,
detection appendix A). Everything else asks it — for a run's recipe, its trained net, its evaluation protocols,
what a sweep evaluates and what the planner needs. A new family is one recipe module and one ``register`` call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from resrepro.errors import ResreproError
from resrepro.train.checkpoint import check_config, clean_state_dict, load_checkpoint, run_of, saved_spec
from resrepro.train.recipe import Family, Recipe
from resrepro.train.recipes import cifar, detection, imagenet
from resrepro.train.rundir import CONFIG
from resrepro.train.spec import RunSpec

_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add (or replace) a family; its spec type must name it (``family = "<name>"``), as config.json will."""
    if family.spec.family != family.name:
        raise ValueError(f"the {family.name} family's spec {family.spec.__name__} says family "
                         f"{family.spec.family!r}")
    _FAMILIES[family.name] = family
    return family


for _family in (cifar.FAMILY, imagenet.FAMILY, detection.FAMILY):
    register(_family)


def families() -> tuple[Family, ...]:
    return tuple(_FAMILIES.values())


def family_of(spec: RunSpec | str) -> Family:
    """The registered family of a spec (or of a family's name)."""
    name = spec if isinstance(spec, str) else spec.family
    if name not in _FAMILIES:
        raise ResreproError(f"unknown run family {name!r}: this resrepro trains {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


def family_of_protocol(protocol: str) -> Family | None:
    """The family whose runs are evaluated under ``protocol`` and keep the result (None: no such family)."""
    return next((f for f in _FAMILIES.values() if f.keeps_eval and protocol in f.protocols), None)


def make_recipe(spec: RunSpec, device: torch.device, channels_last: bool, rank: int = 0, world: int = 1) -> Recipe:
    """The recipe of the spec's family. Loads (or checks) the data: raises before anything is written."""
    return family_of(spec).recipe(spec, device, channels_last, rank, world)


def build_model(spec: RunSpec, state: dict[str, Any]) -> nn.Module:
    """The untrained net a checkpoint of ``spec`` fits (its classes and input channels as saved)."""
    return family_of(spec).build(spec, state)


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[RunSpec, nn.Module]:
    """The spec and trained model (eval mode) of a run directory or checkpoint file, of any family.

    A run directory's checkpoint (``RUN`` or ``RUN/checkpoint.pt``) must belong to its config.json; a checkpoint
    with no config.json beside it is built from its own saved spec and must fit it."""
    state = load_checkpoint(path)
    spec = saved_spec(state, path)
    run = run_of(path)
    if run is not None:
        check_config(spec, run.checkpoint, run.read_spec(), run.path / CONFIG)
    model = build_model(spec, state)
    try:
        model.load_state_dict(clean_state_dict(state["model"]))
    except (RuntimeError, AttributeError, TypeError) as e:
        raise ResreproError(f"checkpoint {path} does not fit {spec.model}: {str(e).splitlines()[0]}") from None
    return spec, model.to(device).eval()
