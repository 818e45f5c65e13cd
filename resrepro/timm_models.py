"""Registers every architecture of our registry with timm: after ``import resrepro.timm_models``,
``timm.create_model("resrepro_resnet110")`` builds it.

timm splits names on "." (pretrained tags) and already owns ``resnet50`` and friends, so our names are
prefixed and "-"/"." become "_": ``timm.create_model("resrepro_resnet110")``,
``timm.create_model("resrepro_resnet34_a")``, ``timm.create_model("resrepro_resnet50_v1_5")``.
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models import register_model

from resrepro.models.registry import ModelSpec, list_models

# timm reads the entrypoint module's ``default_cfgs`` to learn each model's classes and input size; without
# an entry it silently assumes 1000 ImageNet classes.
default_cfgs: dict[str, dict[str, Any]] = {}
# create_model passes these to every entrypoint; our constructors take none of them.
_TIMM_ARGS = {"pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "pretrained_model_args"}


def timm_name(name: str) -> str:
    """The timm name of one of our registry names: ``resnet34-A`` -> ``resrepro_resnet34_a``."""
    return "resrepro_" + name.lower().replace("-", "_").replace(".", "_")


def _entrypoint(spec: ModelSpec):
    def build(pretrained: bool = False, **kwargs: Any):
        if pretrained:
            raise ValueError(f"resrepro ships no pretrained weights for {spec.name}; load a checkpoint instead")
        kwargs = {k: v for k, v in kwargs.items() if k not in _TIMM_ARGS and v is not None}
        if "in_chans" in kwargs:
            kwargs["in_channels"] = kwargs.pop("in_chans")
        return spec.build(**kwargs)

    # timm registers an entrypoint under its function's name, and finds default_cfgs through its module.
    build.__name__ = build.__qualname__ = timm_name(spec.name)
    build.__module__ = __name__
    build.__doc__ = f"resrepro {spec.name}: {spec.family} net of depth {spec.depth} (He et al. 2015)."
    return build


def _register_all() -> None:
    for spec in list_models():
        name = timm_name(spec.name)
        if timm.is_model(name):  # this module reloaded: registering again would only warn of an overwrite
            continue
        default_cfgs[name] = {"num_classes": 10 if spec.family == "cifar" else 1000,
                              "input_size": spec.input_size, "url": ""}
        globals()[name] = register_model(_entrypoint(spec))


_register_all()
