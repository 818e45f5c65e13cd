"""Registers every architecture of the registry with timm as ``resrepro_<name>``.

timm splits names on "." (pretrained tags) and already owns ``resnet50`` and friends, so our names are
prefixed and "-"/"." become "_": ``timm.create_model("resrepro_resnet110")``,
``timm.create_model("resrepro_resnet34_a")``, ``timm.create_model("resrepro_resnet50_v1_5")``.
"""

from __future__ import annotations

from typing import Any

from resrepro.models.registry import ModelSpec, list_models

# timm reads a module-level ``default_cfgs`` to learn each entrypoint's classes and input size; without
# an entry it silently assumes 1000 ImageNet classes.
default_cfgs: dict[str, dict[str, Any]] = {}
_TIMM_ARGS = {"pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "pretrained_model_args"}


def timm_name(name: str) -> str:
    return "resrepro_" + name.lower().replace("-", "_").replace(".", "_")


def _entrypoint(spec: ModelSpec):
    def build(pretrained: bool = False, **kwargs: Any):
        if pretrained:
            raise ValueError(f"resrepro ships no pretrained weights for {spec.name}; load a checkpoint instead")
        kwargs = {k: v for k, v in kwargs.items() if k not in _TIMM_ARGS and v is not None}
        if "in_chans" in kwargs:
            kwargs["in_channels"] = kwargs.pop("in_chans")
        return spec.build(**kwargs)

    build.__name__ = build.__qualname__ = timm_name(spec.name)
    build.__module__ = __name__
    build.__doc__ = f"resrepro {spec.name}: {spec.family} net of depth {spec.depth} (He et al. 2015)."
    return build


def register() -> list[str]:
    """Register all listed architectures (idempotent); returns the timm names."""
    from timm.models import register_model
    from timm.models._registry import _model_entrypoints

    names = []
    for spec in list_models():
        name = timm_name(spec.name)
        classes = 10 if spec.family == "cifar" else 1000
        default_cfgs[name] = {"num_classes": classes, "input_size": spec.input_size, "url": ""}
        if name not in _model_entrypoints:
            fn = _entrypoint(spec)
            globals()[name] = fn
            register_model(fn)
        names.append(name)
    return names
