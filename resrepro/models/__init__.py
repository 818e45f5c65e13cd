"""The torch core: the paper's architectures, their registry and their counts. Imports only torch."""

from resrepro.models.blocks import BasicBlock, Bottleneck, ZeroPadShortcut
from resrepro.models.cifar import CifarResNet
from resrepro.models.counting import count_macs, count_params
from resrepro.models.imagenet import ImageNetResNet
from resrepro.models.registry import ModelSpec, cifar_spec, create_model, list_models, model_name, resolve

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "ImageNetResNet",
    "ModelSpec",
    "ZeroPadShortcut",
    "cifar_spec",
    "count_macs",
    "count_params",
    "create_model",
    "list_models",
    "model_name",
    "resolve",
]
