"""VGG-16 (Simonyan & Zisserman's configuration D): the paper's baseline in Table 3 and the detection backbone
it replaces in Tables 7/8. Thirteen 3×3 convs in five stages, each closed by a 2×2 max pool, then fc6/fc7/fc8."""

from __future__ import annotations

import torch
from torch import nn

from resrepro.models.blocks import init_weights

# Configuration D: convs per stage; filters width, 2·width, 4·width, 8·width, 8·width (64..512 in the original).
VGG16_STAGES = (2, 2, 3, 3, 3)
STAGE_WIDTHS = (1, 2, 4, 8, 8)


class VGG16(nn.Module):
    """VGG-16 without BN, laid out as ``torchvision.models.vgg16`` (``features``, ``avgpool``, ``classifier``), so a
    torchvision weights file loads as it is and, at ``width=64``, every parameter has torchvision's shape.

    ``width`` is conv1's filters; fc6/fc7 scale with it (4096 at 64) so a narrow net stays in proportion.
    Max pooling rounds up (``ceil_mode``) as Caffe's, in which VGG was trained: identical to torchvision's at
    sizes divisible by 32 (224), and a 28-px image (the tiny scale) still leaves conv5_3 a 1×1 map to pool.


    ``batch_norm=True`` (``vgg16-bn``, torchvision's ``vgg16_bn`` layout) is a deviation, not the paper's VGG-16:
    BN after every conv, for the tiny scale, where the paper's VGG-16 does not train from scratch in its few
    hundred iterations.
    """

    def __init__(self, *, num_classes: int = 1000, width: int = 64, in_channels: int = 3,
                 batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for convs, scale in zip(VGG16_STAGES, STAGE_WIDTHS, strict=True):
            for _ in range(convs):
                layers.append(nn.Conv2d(channels, scale * width, 3, padding=1))
                layers += [nn.BatchNorm2d(scale * width)] if batch_norm else []
                layers.append(nn.ReLU(inplace=True))
                channels = scale * width
            layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        # fc6 sees a 7×7 map whatever the input size, as in torchvision (its weights are laid out for 7×7).
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        hidden = 64 * width
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, hidden), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(hidden, num_classes),
        )
        init_weights(self)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.bias)  # He et al.'s init (the one VGG trains from scratch with) starts biases at 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
