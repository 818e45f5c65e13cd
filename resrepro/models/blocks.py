"""Residual building blocks of the paper (Fig. 2 basic, Fig. 5 bottleneck) and its shortcut options A/B/C.

Every block is also a plain block (``plain=True``): the same layers with the shortcut removed, so plain and
residual nets differ only by the addition (paper §4.1).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

SHORTCUTS = ("A", "B", "C")
ZERO_PADS = ("append", "split")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity with spatial subsampling and zero entries for the extra channels; no parameters.

    ``zero_pad="append"`` puts the zeros after the identity channels (fb.resnet.torch);
    ``"split"`` puts half before and half after (akamaster/pytorch_resnet_cifar10). Both are the paper's
    option A; they matter only when loading another project's checkpoint.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, zero_pad: str = "append") -> None:
        super().__init__()
        if zero_pad not in ZERO_PADS:
            raise ValueError(f"zero_pad must be one of {ZERO_PADS}, got {zero_pad!r}")
        self.stride = stride
        extra = out_planes - in_planes
        self.pad = (0, extra) if zero_pad == "append" else (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dims first: (W, W, H, H, C_before, C_after).
        return F.pad(x, (0, 0, 0, 0, *self.pad))


def make_shortcut(
    in_planes: int, out_planes: int, stride: int, shortcut: str, zero_pad: str = "append"
) -> nn.Module:
    """The shortcut of one block. Identity wherever dimensions match, except under option C."""
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    grows = stride != 1 or in_planes != out_planes
    if shortcut == "C" or (shortcut == "B" and grows):
        return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))
    if grows:
        return ZeroPadShortcut(in_planes, out_planes, stride, zero_pad)
    return nn.Identity()


class BasicBlock(nn.Module):
    """Two 3×3 convs (Fig. 2); BN after each conv, ReLU after the addition."""

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        plain: bool = False,
        shortcut: str = "A",
        zero_pad: str = "append",
        stride_in_1x1: bool = True,  # unused: a basic block has no 1×1; accepted for a uniform signature
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = None if plain else make_shortcut(in_planes, planes, stride, shortcut, zero_pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3, 1×1 restore (Fig. 5 right).

    The paper strides the first 1×1 (``stride_in_1x1=True``, "v1"): that is what gives Table 1's FLOPs.
    torchvision and timm stride the 3×3 ("v1.5"), which costs more multiply-adds.
    """

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        plain: bool = False,
        shortcut: str = "B",
        zero_pad: str = "append",
        stride_in_1x1: bool = True,
    ) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_planes, planes, s1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, s3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = None if plain else make_shortcut(in_planes, out_planes, stride, shortcut, zero_pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


def init_weights(model: nn.Module) -> None:
    """He (Kaiming normal) init for convs as in the paper [13], BN as identity, FC left at PyTorch's default.

    ``mode="fan_out"`` follows fb.resnet.torch (Facebook's Torch reimplementation, which notes where it differs
    from the paper), as torchvision does.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def zero_init_residual(model: nn.Module) -> None:
    """γ = 0 for the last BN of each residual branch (Goyal et al. 2017; torchvision's ``zero_init_residual``):
    every residual block then starts as its shortcut. Blocks without a shortcut (plain nets) keep γ = 1, or they
    would output nothing."""
    for m in model.modules():
        if isinstance(m, (BasicBlock, Bottleneck)) and m.shortcut is not None:
            nn.init.zeros_((m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight)
