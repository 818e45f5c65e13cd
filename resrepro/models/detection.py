"""Faster R-CNN (torchvision's RPN, RoI heads, box coder, losses and NMS) on the paper's two backbones (appendix A):
VGG-16 and the ResNet "C4" split, with BN frozen as a constant affine map. Imports only torch and torchvision."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from resrepro.errors import ResreproError
from resrepro.models.registry import ModelSpec, UnknownModelError, resolve

# The input normalisations of our ImageNet recipe (its ``normalize`` setting): the detector must feed its backbone
# what the backbone was pre-trained on. The paper subtracts the mean only; torchvision's weights also divide by std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
NORMALIZATIONS = {"pixel-mean": (IMAGENET_MEAN, (1.0, 1.0, 1.0)), "mean-std": (IMAGENET_MEAN, (0.229, 0.224, 0.225))}
# Where each classifier keeps its final ImageNet layer, which detection replaces by the two sibling layers.
CLASSIFIER_LAYER = {"resnet": "fc.", "vgg": "classifier.6."}
# Deviation: RoIAlign (bilinear, 2×2 samples per bin), the pooler torchvision's RoI heads take, where the paper
# has Fast R-CNN's RoI max pooling with boxes rounded to the feature grid.
C4_ROI_SIZE = 14  # RoI features for conv5_1, whose stride 2 halves them to 7×7, as conv4's 14×14 map at 224 px
VGG_ROI_SIZE = 7  # fc6 was trained on 7×7 pool5 maps: RoI pooling replaces pool5


def build_detector(
    backbone: str,
    num_classes: int,
    *,
    width: int = 64,
    min_size: int = 600,
    max_size: int = 1000,
    anchor_sizes: tuple[int, ...] = (128, 256, 512),
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
    proposals_test: int = 300,
    proposals_train: int = 2000,
    pre_nms_test: int = 6000,
    pre_nms_train: int = 12000,
    rois_per_image: int = 128,
    normalize: str = "pixel-mean",
    classifier_state: dict[str, torch.Tensor] | None = None,
    freeze_bn: bool = True,
    **faster_rcnn_kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN whose shared layers and per-region head come from the ImageNet classifier ``backbone``.

    ``backbone`` is a registry ImageNet net: a ResNet (v1 or v1.5, basic or bottleneck, plain too) is split C4 —
    conv1..conv4_x shared at stride 16, RoIAlign 14×14, conv5_x + global average pooling per region — and
    ``vgg16`` shares conv1_1..conv5_3 (stride 16) with RoIAlign 7×7 and fc6/fc7 per region. ``num_classes`` counts
    object classes without background. ``classifier_state`` (the classifier's state dict; its final layer is
    ignored) is loaded before BN is frozen, so frozen BN keeps the statistics it came with. ``normalize`` must be
    the backbone's pre-training normalisation ("pixel-mean": our ImageNet runs' default; "mean-std":
    torchvision's weights). Defaults are Faster R-CNN's (600/1000 px, 9 anchors, 300 test proposals);
    ``faster_rcnn_kwargs`` go to torchvision's FasterRCNN as they are.

    ``freeze_bn=False`` (a deviation, for training from scratch only) keeps BN learning with batch statistics:
    frozen at initialisation BN is the identity, and a deep ResNet without normalisation diverges (ResNet-101's
    first losses are in the thousands).
    """
    if num_classes < 1:
        raise ResreproError(f"a detector needs at least one object class, got num_classes={num_classes}")
    if normalize not in NORMALIZATIONS:
        raise ResreproError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    spec = backbone_spec(backbone)
    net = spec.build(width=width)
    if classifier_state is not None:
        load_classifier_state(net, classifier_state, spec.arch, f"{spec.name} of width {width}")
    if freeze_bn:
        freeze_batchnorm(net)
    trunk, head, head_channels, roi_size = _split_vgg(net) if spec.arch == "vgg" else _split_c4(net)
    mean, std = NORMALIZATIONS[normalize]
    # Faster R-CNN's proposal counts and RoI sampling (py-faster-rcnn's end-to-end settings): 12000 -> 2000
    # proposals to train, 6000 -> 300 to test, 128 RoIs per image a quarter of them foreground, and the per-class
    # NMS at IoU 0.3 of its test.
    settings: dict[str, Any] = dict(
        min_size=min_size, max_size=max_size, image_mean=list(mean), image_std=list(std),
        rpn_anchor_generator=Fp32AnchorGenerator((tuple(anchor_sizes),), (tuple(aspect_ratios),)),
        rpn_pre_nms_top_n_train=pre_nms_train, rpn_post_nms_top_n_train=proposals_train,
        rpn_pre_nms_top_n_test=pre_nms_test, rpn_post_nms_top_n_test=proposals_test,
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=roi_size, sampling_ratio=2),
        box_head=head, box_predictor=_sibling_layers(head_channels, num_classes + 1),
        box_batch_size_per_image=rois_per_image, box_nms_thresh=0.3,
    )
    settings = {**settings, **faster_rcnn_kwargs}
    if "rpn_head" not in settings:  # made here, after the sibling layers, as FasterRCNN would: the same RNG draws
        anchors = settings["rpn_anchor_generator"].num_anchors_per_location()[0]
        settings["rpn_head"] = Fp32RPNHead(trunk.out_channels, anchors)
    return FasterRCNN(trunk, **settings)


# Box arithmetic in fp32 under autocast (bf16 keeps 8 bits of mantissa: 700 px rounds to 4 px). torchvision makes
# anchors in the feature maps' dtype and decodes boxes in the regression outputs' dtype, so the anchor generator
# and the two regression layers hand over fp32 (fp64 stays fp64); outside autocast each is the identity, bit for bit.
def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


class Fp32AnchorGenerator(AnchorGenerator):
    """torchvision's AnchorGenerator whose anchors are fp32 whatever the dtype of the feature maps."""

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        # Only the maps' shape, dtype and device are read: stand-ins of no memory carry them.
        stand_ins = [torch.zeros((), dtype=torch.promote_types(f.dtype, torch.float32), device=f.device).expand(f.shape)
                     for f in feature_maps]
        return super().forward(image_list, stand_ins)


class Fp32RPNHead(RPNHead):
    """torchvision's RPNHead whose objectness logits and box deltas come out in fp32."""

    def forward(self, x: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = super().forward(x)
        return [_at_least_fp32(t) for t in logits], [_at_least_fp32(t) for t in deltas]


class SiblingLayers(FastRCNNPredictor):
    """Fast R-CNN's class scores and per-class box regression, handed over in fp32."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, deltas = super().forward(x)
        return _at_least_fp32(scores), _at_least_fp32(deltas)


def backbone_spec(backbone: str) -> ModelSpec:
    """The registry spec of a detection backbone: any ImageNet net; a CIFAR net or unknown name is refused."""
    try:
        spec = resolve(backbone)
    except UnknownModelError as e:
        raise ResreproError(f"detection backbone: {e}") from None
    if spec.family != "imagenet":
        raise ResreproError(f"detection backbone {backbone!r} is a CIFAR net: it needs an ImageNet net with a "
                            "stride-16 stage (resnet50, resnet101, resnet101-v1.5, ..., vgg16)")
    return spec


def _split_c4(net: nn.Module) -> tuple[nn.Module, nn.Module, int, int]:
    """Appendix A: conv1, conv2_x..conv4_x (every layer of stride <= 16) compute the shared map; RoI pooling
    comes before conv5_1, and conv5_x with global average pooling run per region in place of VGG's fc layers."""
    trunk = nn.Sequential(OrderedDict(
        conv1=net.conv1, bn1=net.bn1, relu=nn.ReLU(inplace=True), maxpool=net.maxpool,
        layer1=net.layer1, layer2=net.layer2, layer3=net.layer3,
    ))
    trunk.out_channels = _out_channels(net.layer3)
    head = nn.Sequential(OrderedDict(layer4=net.layer4, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten()))
    return trunk, head, _out_channels(net.layer4), C4_ROI_SIZE


def _split_vgg(net: nn.Module) -> tuple[nn.Module, nn.Module, int, int]:
    """conv1_1..conv5_3 (13 convs, four pools: stride 16) shared; RoI pooling in place of pool5; fc6, fc7 per
    region. fc6/fc7 keep VGG's dropout, as Faster R-CNN's VGG-16 does (torchvision's TwoMLPHead has none)."""
    names, stage, conv = [], 1, 1
    for m in net.features:
        if isinstance(m, nn.Conv2d):
            names.append(f"conv{stage}_{conv}")
        elif isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):  # vgg16-bn
            names.append(f"bn{stage}_{conv}")
        elif isinstance(m, nn.ReLU):
            names.append(f"relu{stage}_{conv}")
            conv += 1
        else:
            names.append(f"pool{stage}")
            stage, conv = stage + 1, 1
    trunk = nn.Sequential(OrderedDict(zip(names[:-1], list(net.features)[:-1], strict=True)))  # pool5 dropped
    trunk.out_channels = _out_channels(net.features)  # the last conv: with BN, features[-3] is a BN
    fc6, relu6, drop6, fc7, relu7, drop7 = list(net.classifier)[:6]
    head = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc6=fc6, relu6=relu6, drop6=drop6, fc7=fc7, relu7=relu7,
                                     drop7=drop7))
    return trunk, head, fc7.out_features, VGG_ROI_SIZE


def _out_channels(stage: nn.Sequential) -> int:
    return [m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def _sibling_layers(in_features: int, classes: int) -> FastRCNNPredictor:
    """Class scores and per-class box regression, initialised as Fast R-CNN's (Gaussian, std 0.01 and 0.001)."""
    predictor = SiblingLayers(in_features, classes)
    for layer, std in ((predictor.cls_score, 0.01), (predictor.bbox_pred, 0.001)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)
    return predictor


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by torchvision's FrozenBatchNorm2d with its affine parameters and running
    statistics (appendix A: after pre-training BN is a constant affine map). They become buffers: no gradients,
    no weight decay, no statistics updates."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def load_classifier_state(net: nn.Module, state: dict[str, torch.Tensor], arch: str, what: str) -> None:
    """Load an ImageNet classifier's weights into ``net`` (the same architecture), ignoring its final layer."""
    net.load_state_dict(check_classifier_state(net, state, arch, what), strict=False)


def check_classifier_state(net: nn.Module, state: dict[str, torch.Tensor], arch: str, what: str,
                           ) -> dict[str, torch.Tensor]:
    """``state`` without its final layer, if the rest fits ``net`` key for key and shape for shape; otherwise
    one ResreproError naming the first keys or the shape that differ. ``net`` may live on the meta device."""
    final = CLASSIFIER_LAYER[arch]
    own = {k: v for k, v in net.state_dict().items() if not k.startswith(final)}
    given = {k: v for k, v in state.items() if not k.startswith(final)}
    # Files written before torch 0.4.1 have no BN step counters; BN makes up for them on load.
    missing = [k for k in own if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in own]
    problems = []
    if missing:
        problems.append(f"missing {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected {_first(unexpected)}")
    if not problems:
        for k, v in given.items():
            if not isinstance(v, torch.Tensor) or v.shape != own[k].shape:
                shape = list(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                problems.append(f"{k} is {shape} in the weights but {list(own[k].shape)} in the net (another width "
                                "or depth?)")
                break
    if problems:
        raise ResreproError(f"the classifier weights do not fit {what}: {'; '.join(problems)}")
    return given


def _first(keys: list[str], n: int = 3) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def classifier_state_from_torchvision(state: dict[str, torch.Tensor], backbone: str) -> dict[str, torch.Tensor]:
    """A torchvision ImageNet classifier's state dict in our names. torchvision's ResNet-50/101/152 stride the
    3×3 of the bottleneck ("v1.5"), so they fit only our ``-v1.5`` nets, and a paper-style (v1) name is refused
    rather than given weights trained for another function; its ResNet-18/34 are our option B nets; VGG-16 loads
    as it is."""
    spec = backbone_spec(backbone)
    if spec.arch == "resnet" and spec.depth >= 50 and spec.stride_in_1x1:
        raise ResreproError(f"torchvision's ResNet-{spec.depth} puts the stride on the 3×3 (v1.5): name the backbone "
                            f"{spec.name}-v1.5 to use its weights")
    if spec.arch == "vgg":
        return dict(state)
    return {k.replace(".downsample.", ".shortcut."): v for k, v in state.items()}
