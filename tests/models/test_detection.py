"""Faster R-CNN on the paper's two backbones (appendix A): which layers are shared, what runs per region, frozen
BN, the classifier's weights landing where they belong, torchvision's losses and detections, bad weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FrozenBatchNorm2d

from resrepro.errors import ResreproError
from resrepro.models import count_params, resolve
from resrepro.models.detection import build_detector
from resrepro.train.imports import classifier_state_from_file

# A detector small enough for a CPU test: narrow nets, ~100-px images, anchors scaled down with them.
SMALL = dict(width=8, min_size=96, max_size=128, anchor_sizes=(16, 32, 64), pre_nms_train=300, proposals_train=100,
             pre_nms_test=200, proposals_test=50, rois_per_image=32)
IMAGES = [torch.rand(3, 90, 120), torch.rand(3, 80, 100)]
TARGETS = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
           {"boxes": torch.tensor([[5.0, 5.0, 50.0, 40.0], [60.0, 30.0, 95.0, 75.0]]), "labels": torch.tensor([2, 3])}]


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_c4_split_shares_conv1_to_conv4_and_runs_conv5_per_region():
    det = build_detector("resnet101", 3, **SMALL)
    assert list(dict(det.backbone.named_children())) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                                          "layer3"]
    # Appendix A: conv1..conv4_x are 91 conv layers (1 + 3 per bottleneck × (3 + 4 + 23)), shortcuts aside.
    assert len([n for n, m in det.backbone.named_modules() if isinstance(m, nn.Conv2d) and "shortcut" not in n]) == 91
    head = det.roi_heads.box_head
    assert list(dict(head.named_children())) == ["layer4", "pool", "flatten"] and len(head.layer4) == 3
    features = det.backbone(torch.rand(1, 3, 96, 128))
    assert features.shape == (1, 1024 * 8 // 64, 96 // 16, 128 // 16)  # stride 16, 1024·width/64 channels
    boxes = [torch.tensor([[0.0, 0.0, 64.0, 64.0], [16.0, 8.0, 80.0, 40.0]])]
    pooled = det.roi_heads.box_roi_pool({"0": features}, boxes, [(96, 128)])
    assert pooled.shape == (2, 128, 14, 14)
    per_region = head(pooled)  # conv5_1's stride 2 gives 7×7, global average pooling one vector per region
    assert per_region.shape == (2, 2048 * 8 // 64)
    scores, deltas = det.roi_heads.box_predictor(per_region)
    assert scores.shape == (2, 4) and deltas.shape == (2, 16)  # 3 classes + background, a box per class


def test_c4_split_of_a_basic_block_net_and_of_v15():
    det = build_detector("resnet18", 2, **SMALL)
    assert det.backbone.out_channels == 32 and det.roi_heads.box_predictor.cls_score.in_features == 64
    v15 = build_detector("resnet50-v1.5", 2, **SMALL)
    assert v15.roi_heads.box_head.layer4[0].conv2.stride == (2, 2)  # torchvision's stride placement kept


def test_vgg16_split_shares_13_convs_at_stride_16_and_runs_fc6_fc7_per_region():
    det = build_detector("vgg16", 3, **SMALL)
    assert len(_convs(det.backbone)) == 13 and len(_convs(det.roi_heads.box_head)) == 0
    names = list(dict(det.backbone.named_children()))
    assert names[0] == "conv1_1" and names[-2:] == ["conv5_3", "relu5_3"] and "pool5" not in names
    assert sum(isinstance(m, nn.MaxPool2d) for m in det.backbone) == 4
    assert det.backbone(torch.rand(1, 3, 96, 128)).shape == (1, 64, 6, 8)
    head = det.roi_heads.box_head
    assert (head.fc6.in_features, head.fc6.out_features, head.fc7.out_features) == (64 * 7 * 7, 512, 512)
    assert det.roi_heads.box_roi_pool.output_size == (7, 7)
    bn = build_detector("vgg16-bn", 3, **SMALL).backbone  # the tiny scale's deviation: BN after each conv, frozen
    frozen = [n for n, m in bn.named_children() if isinstance(m, FrozenBatchNorm2d)]
    assert len(_convs(bn)) == 13 and len(frozen) == 13 and frozen[-1] == "bn5_3"


def _perturbed_classifier(name: str) -> nn.Module:
    torch.manual_seed(1)
    net = resolve(name).build(width=8, num_classes=10)
    with torch.no_grad():
        for m in net.modules():  # statistics and affine maps a real pre-training would leave
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_classifier_state_lands_in_the_shared_layers_and_the_region_head():
    net = _perturbed_classifier("resnet50")
    det = build_detector("resnet50", 3, classifier_state=net.state_dict(), **SMALL)
    assert torch.equal(det.backbone.layer2[1].conv2.weight, net.layer2[1].conv2.weight)
    assert torch.equal(det.roi_heads.box_head.layer4[2].conv3.weight, net.layer4[2].conv3.weight)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():  # the shared map is the classifier's conv4_x output, BN in eval mode
        expected = net.layer3(net.layer2(net.layer1(net.maxpool(net.bn1(net.conv1(x)).relu()))))
        # Frozen BN folds the statistics into one scale and shift, eval BN applies them in turn: the same map up
        # to float rounding, which 40 layers grow to ~2e-5 on some CPUs (an AMD EPYC's kernels).
        torch.testing.assert_close(det.backbone(x), expected, rtol=1e-4, atol=1e-4)
    vgg = _perturbed_classifier("vgg16")
    det = build_detector("vgg16", 3, classifier_state=vgg.state_dict(), **SMALL)
    assert torch.equal(det.backbone.conv5_3.weight, vgg.features[28].weight)
    assert torch.equal(det.roi_heads.box_head.fc7.weight, vgg.classifier[3].weight)


def test_frozen_bn_is_the_classifiers_eval_bn_and_stays_fixed_through_a_training_step():
    net = _perturbed_classifier("resnet50")
    det = build_detector("resnet50", 3, classifier_state=net.state_dict(), **SMALL)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in det.modules())
    frozen = [m for m in det.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen) == sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert all(not list(m.parameters()) for m in frozen)  # buffers: no gradient, no weight decay
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(det.backbone.bn1(x), net.bn1(x))  # the constant affine map of eval-mode BN
    before = {k: v.clone() for k, v in det.state_dict().items() if "bn" in k or "shortcut.1" in k}
    det.train()
    opt = torch.optim.SGD(det.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sum(det(IMAGES, TARGETS).values()).backward()
    opt.step()
    after = det.state_dict()
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())
    assert not torch.equal(det.backbone.layer1[0].conv1.weight, net.layer1[0].conv1.weight)  # convs did train


def test_train_mode_gives_torchvisions_four_losses_and_eval_mode_boxes_inside_the_image():
    torch.manual_seed(0)
    det = build_detector("resnet18", 3, classifier_state=_perturbed_classifier("resnet18").state_dict(), **SMALL)
    det.train()
    losses = det(IMAGES, TARGETS)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert det.backbone.conv1.weight.grad.abs().sum() > 0
    assert det.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    det.eval()
    with torch.no_grad():
        out = det(IMAGES)
    assert len(out) == 2 and any(len(o["boxes"]) for o in out)
    for image, o in zip(IMAGES, out, strict=True):  # in the original image's pixels, not the resized one's
        h, w = image.shape[1:]
        assert (o["boxes"][:, :2] >= 0).all() and (o["boxes"][:, 2] <= w).all() and (o["boxes"][:, 3] <= h).all()
        assert o["labels"].min() >= 1 and o["labels"].max() <= 3 and len(o["boxes"]) <= 100


def test_paper_defaults_anchors_sizes_and_proposals():
    with torch.device("meta"):
        det = build_detector("vgg16", 20, width=8)
    assert det.rpn.anchor_generator.num_anchors_per_location() == [9]
    assert det.rpn.anchor_generator.sizes == ((128, 256, 512),)
    assert det.transform.min_size == (600,) and det.transform.max_size == 1000
    assert det.rpn._post_nms_top_n["testing"] == 300 and det.roi_heads.box_predictor.cls_score.out_features == 21
    assert det.transform.image_std == [1.0, 1.0, 1.0]  # the paper's mean subtraction, as our ImageNet runs


def test_parameter_counts_of_the_two_paper_detectors():
    # Exact composition: the classifier less its 1000-way layer, plus torchvision's RPN head (3×3 conv keeping the
    # channels, 9 objectness and 36 box outputs) plus the sibling layers for VOC's 20 classes + background.
    with torch.device("meta"):
        vgg, res = build_detector("vgg16", 20), build_detector("resnet101", 20)
        vgg_cls, res_cls = resolve("vgg16").build(), resolve("resnet101").build()

    def rpn(c: int) -> int:
        return c * c * 9 + c + (c + 1) * 9 + (c + 1) * 36

    def siblings(f: int) -> int:
        return (f + 1) * 21 + (f + 1) * 84

    assert count_params(vgg) == 138_357_544 - 4_097_000 + rpn(512) + siblings(4096) == 137_073_622
    # Frozen BN's affine parameters are constants (buffers) now: 105,344 of ResNet-101's 44.5M parameters. The
    # residual detector has 38% of VGG's parameters (VGG's fc6 alone has 103M), as the paper's nets do (44.5M/138M).
    bn = sum(m.weight.numel() * 2 for m in res_cls.modules() if isinstance(m, nn.BatchNorm2d))
    assert count_params(res) == 44_549_160 - 2_049_000 - bn + rpn(1024) + siblings(2048) == 52_094_294
    assert count_params(vgg_cls) == 138_357_544 and count_params(res_cls) == 44_549_160


def test_a_torchvision_file_loads_into_the_v15_backbone_and_computes_torchvisions_function(tmp_path):
    import torchvision

    theirs = torchvision.models.resnet50(weights=None).eval()
    torch.manual_seed(0)
    for m in theirs.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(theirs.state_dict(), tmp_path / "resnet50.pth")
    state = classifier_state_from_file(tmp_path / "resnet50.pth", "resnet50-v1.5")
    det = build_detector("resnet50-v1.5", 3, width=64, normalize="mean-std", classifier_state=state)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = theirs.layer3(theirs.layer2(theirs.layer1(theirs.maxpool(theirs.relu(theirs.bn1(theirs.conv1(x)))))))
        torch.testing.assert_close(det.backbone(x), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ResreproError, match="v1.5.*resnet50-v1.5"):
        classifier_state_from_file(tmp_path / "resnet50.pth", "resnet50")  # the paper's stride: another function
    with pytest.raises(ResreproError, match=r"do not fit resnet101-v1.5 of width 64: missing layer3.6.conv1.weight"):
        classifier_state_from_file(tmp_path / "resnet50.pth", "resnet101-v1.5")


def test_bad_weights_and_backbones_are_one_clear_error(tmp_path):
    narrow = resolve("resnet50").build(width=8).state_dict()
    with pytest.raises(ResreproError, match=r"conv1.weight is \[8, 3, 7, 7\] in the weights but \[16, 3, 7, 7\]"):
        build_detector("resnet50", 3, classifier_state=narrow, **{**SMALL, "width": 16})
    with pytest.raises(ResreproError, match="missing features.0.weight, features.0.bias, "
                       "features.2.weight and 27 more; unexpected conv1.weight"):
        build_detector("vgg16", 3, classifier_state=narrow, **SMALL)
    with pytest.raises(ResreproError, match="unexpected extra.weight"):
        build_detector("resnet50", 3, classifier_state={**narrow, "extra.weight": torch.zeros(1)}, **SMALL)
    with pytest.raises(ResreproError, match="CIFAR net"):
        build_detector("resnet56", 3, **SMALL)
    with pytest.raises(ResreproError, match="unknown model"):
        build_detector("resnet-101", 3, **SMALL)
    (tmp_path / "junk.pth").write_text("not a torch file")
    with pytest.raises(ResreproError, match="not a file written by torch.save"):
        classifier_state_from_file(tmp_path / "junk.pth", "vgg16")
    with pytest.raises(ResreproError, match="cannot read"):
        classifier_state_from_file(tmp_path / "absent.pth", "vgg16")
    torch.save({"epoch": 3}, tmp_path / "nostate.pth")
    with pytest.raises(ResreproError, match="no state dict"):
        classifier_state_from_file(tmp_path / "nostate.pth", "vgg16")


def test_from_scratch_frozen_bn_is_the_identity_and_a_deep_resnet_diverges_without_learning_bn():
    torch.manual_seed(0)
    frozen = build_detector("resnet101", 3, **SMALL).train()
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.running_var, torch.ones_like(
        m.running_var)) for m in frozen.modules() if isinstance(m, FrozenBatchNorm2d))
    assert frozen(IMAGES, TARGETS)["loss_classifier"] > 100  # 30 unnormalised residual sums: activations explode
    torch.manual_seed(0)
    learning = build_detector("resnet101", 3, freeze_bn=False, **SMALL).train()
    assert any(isinstance(m, nn.BatchNorm2d) for m in learning.modules())
    assert learning(IMAGES, TARGETS)["loss_classifier"] < 2  # about ln 4: chance among 3 classes + background


def _nearest_box_gap(boxes: torch.Tensor, reference: torch.Tensor) -> float:
    """The largest coordinate gap (px) from a box of ``boxes`` to its nearest box of ``reference``."""
    return (boxes[:, None, :] - reference[None, :, :]).abs().amax(-1).amin(-1).max().item()


def test_boxes_under_bf16_autocast_are_the_fp32_boxes():
    # bf16 keeps 8 bits of mantissa: a coordinate of 700 px rounds to 4 px. Anchors, proposals and decoded boxes
    # must stay fp32 under autocast (torchvision decodes in the regression output's dtype, and makes anchors in the
    # feature maps'). No suppression and no top-k cut, so both precisions give the same boxes in another order.
    torch.manual_seed(0)
    det = build_detector("resnet18", 1, width=8, anchor_sizes=(256,), aspect_ratios=(1.0,), pre_nms_test=5000,
                         proposals_test=5000, rpn_nms_thresh=1.0, box_nms_thresh=1.0, box_score_thresh=0.0,
                         box_detections_per_img=5000).eval()
    with torch.no_grad():  # larger box regression than the initial one, so boxes move off the anchor grid
        det.roi_heads.box_predictor.bbox_pred.weight.normal_(std=0.01)
    image = [torch.rand(3, 600, 900)]

    def boxes(autocast: bool) -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return det(image)[0]["boxes"]

    fp32, bf16 = boxes(False), boxes(True)
    assert bf16.dtype == torch.float32 and len(bf16) == len(fp32) > 1000 and fp32[:, 2:].max() > 800
    assert _nearest_box_gap(bf16, fp32) < 0.5
    # torchvision's own anchor generator and heads: the same weights' boxes land pixels away
    det.rpn.anchor_generator.__class__ = AnchorGenerator
    det.rpn.head.__class__ = RPNHead
    det.roi_heads.box_predictor.__class__ = FastRCNNPredictor
    assert torch.equal(boxes(False), fp32) and _nearest_box_gap(boxes(True).float(), fp32) > 1
