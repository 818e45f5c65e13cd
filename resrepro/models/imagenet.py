"""The paper's ImageNet nets (Table 1): 18/34 with basic blocks, 50/101/152 with bottlenecks."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from resrepro.models.blocks import BasicBlock, Bottleneck, init_weights
from resrepro.models.stages import IMAGENET_LAYERS

BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ImageNetResNet(nn.Module):
    """7×7/2 conv, 3×3/2 max pool, four stages (conv3_1, conv4_1, conv5_1 downsample by 2), avg pool, FC."""

    def __init__(
        self,
        depth: int,
        *,
        plain: bool = False,
        shortcut: str = "B",
        zero_pad: str = "append",
        stride_in_1x1: bool = True,
        num_classes: int = 1000,
        width: int = 64,  # conv1/conv2_x filters (64 in Table 1); later stages double it, as in the paper
    ) -> None:
        super().__init__()
        if depth not in IMAGENET_LAYERS:
            raise ValueError(f"ImageNet depth must be one of {sorted(IMAGENET_LAYERS)}, got {depth}")
        kind, layers = IMAGENET_LAYERS[depth]
        block = BLOCKS[kind]
        self.depth, self.plain, self.shortcut = depth, plain, shortcut
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        kw = dict(plain=plain, shortcut=shortcut, zero_pad=zero_pad, stride_in_1x1=stride_in_1x1)
        stages, in_planes = [], width
        for i, (planes, count) in enumerate(zip((width, 2 * width, 4 * width, 8 * width), layers, strict=True)):
            blocks = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_planes, planes, stride, **kw))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Adaptive pooling keeps the net fully convolutional for multi-scale testing (Table 4).
        x = self.forward_features(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
