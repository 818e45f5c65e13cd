"""The torch core: the paper's architectures, their registry and their counts. Imports only torch.

Names load on first use (PEP 562): ``resrepro.models.registry`` must stay importable without torch, and
importing it runs this file first.
"""

import importlib

_WHERE = {
    "BasicBlock": "blocks",
    "Bottleneck": "blocks",
    "ZeroPadShortcut": "blocks",
    "CifarResNet": "cifar",
    "ImageNetResNet": "imagenet",
    "count_macs": "counting",
    "count_params": "counting",
    "ModelSpec": "registry",
    "cifar_spec": "registry",
    "create_model": "registry",
    "list_models": "registry",
    "model_name": "registry",
    "resolve": "registry",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
