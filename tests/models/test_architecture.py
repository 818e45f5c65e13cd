"""The architectures themselves: shapes, option A's padding, the paper's layer layout, torchvision equivalence."""

import pytest
import torch
from torch import nn

from resrepro.errors import ResreproError
from resrepro.models import ZeroPadShortcut, create_model, list_models, resolve
from resrepro.models.blocks import Bottleneck
from resrepro.models.registry import canonical_model


@pytest.mark.parametrize("spec", [s for s in list_models() if s.depth < 1202], ids=lambda s: s.name)
def test_forward_shape_of_every_registered_model(spec):
    model = spec.build(num_classes=7).eval()
    size = 32 if spec.family == "cifar" else 64  # ImageNet nets are fully convolutional: 64 px is enough
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)


def test_resnet1202_forward_backward_on_cpu():
    model = create_model("resnet1202")
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.conv1.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0


def test_cifar_layout_follows_section_4_2():
    model = create_model("resnet20")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and all(c.kernel_size == (3, 3) and c.bias is None for c in convs)
    assert [c.out_channels for c in convs] == [16] * 7 + [32] * 6 + [64] * 6
    strided = [c for c in convs if c.stride == (2, 2)]
    assert len(strided) == 2  # downsampling by stride-2 convs at the first layer of stages 2 and 3
    feats = model.forward_features(torch.randn(1, 3, 32, 32))
    assert feats.shape == (1, 64, 8, 8)


@pytest.mark.parametrize("zero_pad", ["append", "split"])
def test_option_a_is_identity_plus_zero_channels(zero_pad):
    sc = ZeroPadShortcut(16, 32, stride=2, zero_pad=zero_pad)
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    kept = slice(0, 16) if zero_pad == "append" else slice(8, 24)
    assert torch.equal(y[:, kept], x[:, :, ::2, ::2])
    zeros = torch.ones(32, dtype=torch.bool)
    zeros[kept] = False
    assert torch.count_nonzero(y[:, zeros]) == 0
    assert not list(sc.parameters())


def test_plain_nets_have_no_shortcut_and_same_params():
    plain, res = create_model("plain56"), create_model("resnet56")
    assert all(b.shortcut is None for stage in plain.stages() for b in stage)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in res.parameters())


def test_option_c_projects_everywhere_b_only_where_dimensions_grow():
    b, c = create_model("resnet20-B"), create_model("resnet20-C")
    b_proj = [isinstance(blk.shortcut, nn.Sequential) for st in b.stages() for blk in st]
    c_proj = [isinstance(blk.shortcut, nn.Sequential) for st in c.stages() for blk in st]
    assert b_proj == [False] * 3 + [True, False, False] * 2
    assert all(c_proj)


def test_bottleneck_stride_placement():
    v1, v15 = Bottleneck(256, 128, 2, stride_in_1x1=True), Bottleneck(256, 128, 2, stride_in_1x1=False)
    assert (v1.conv1.stride, v1.conv2.stride) == ((2, 2), (1, 1))
    assert (v15.conv1.stride, v15.conv2.stride) == ((1, 1), (2, 2))


def test_he_init_and_bias_free_convs():
    torch.manual_seed(0)
    model = create_model("resnet110")
    w = model.layer2[3].conv1.weight
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    assert w.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bn.weight.eq(1).all() and bn.bias.eq(0).all() for bn in bns)


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_same_function_as_torchvision_with_v15_stride_and_option_b(depth):
    import torchvision

    ours = create_model(f"resnet{depth}-v1.5" if depth >= 50 else f"resnet{depth}-B").eval()
    theirs = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    mine, other = ours.state_dict(), theirs.state_dict()
    assert len(mine) == len(other)
    # Same modules in the same order; only the shortcut's name differs (shortcut vs downsample).
    ours.load_state_dict({k: other[t] for k, t in zip(mine, other, strict=True)})
    torch.manual_seed(0)
    for m in theirs.modules():  # non-trivial BN statistics so the comparison can fail
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours.load_state_dict({k: theirs.state_dict()[t] for k, t in zip(mine, other, strict=True)})
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


def test_vgg16_is_torchvisions_config_d_at_width_64_and_narrows_with_width():
    import torchvision

    ours, theirs = create_model("vgg16").eval(), torchvision.models.vgg16(weights=None).eval()
    shapes = [(k, v.shape) for k, v in ours.state_dict().items()]
    assert shapes == [(k, v.shape) for k, v in theirs.state_dict().items()]
    ours.load_state_dict(theirs.state_dict())  # torchvision's weights file loads as it is
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
    narrow = create_model("vgg16", width=8, num_classes=10)
    convs = [m for m in narrow.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8] * 2 + [16] * 2 + [32] * 3 + [64] * 6 and len(convs) == 13
    assert narrow.classifier[0].out_features == 512 and not any(isinstance(m, nn.BatchNorm2d) for m in narrow.modules())
    assert narrow(torch.randn(2, 3, 28, 28)).shape == (2, 10)  # the tiny scale's crop: Caffe's ceil-mode pools
    assert resolve("vgg16").paper_macs == 15.3e9
    with_bn = create_model("vgg16-bn")  # a deviation for the tiny scale: torchvision's vgg16_bn
    shapes = [(k, v.shape) for k, v in with_bn.state_dict().items()]
    assert shapes == [(k, v.shape) for k, v in torchvision.models.vgg16_bn(weights=None).state_dict().items()]
    assert "vgg16-bn" not in [s.name for s in list_models()]  # not one of the paper's nets


@pytest.mark.parametrize("name", ["resnet21", "plain7", "resnet34-D", "plain20-B", "resnet20-v1.5", "vgg19", "resnet0"])
def test_bad_names_raise_a_clear_error(name):
    with pytest.raises(ResreproError):
        resolve(name)


def test_names_round_trip():
    for spec in list_models():
        assert resolve(spec.name) == spec
    assert resolve("cifar-resnet50").n == 8 and resolve("resnet50").family == "imagenet"


def test_canonical_model_groups_spellings_of_one_net_and_keeps_unknown_names():
    assert canonical_model("resnet34-B") == canonical_model("ImageNet-ResNet34") == "resnet34"
    assert canonical_model("resnet20-A") == "resnet20" and canonical_model("resnet34-A") == "resnet34-A"
    assert canonical_model("someone-elses-net") == "someone-elses-net"
