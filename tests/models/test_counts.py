"""Parameter and multiply-add counts of the paper's architectures: exact, not approximate."""

import pytest

from resrepro.models import count_macs, count_params, resolve
from resrepro.models.summary import model_counts

# (n, plain/option A, option B): exact counts of the §4.2 nets (BN affine included, convs without bias);
# Table 6 prints them rounded (0.27M, ..., 19.4M).
CIFAR_PARAMS = [
    (3, 269_722, 272_474),
    (5, 464_154, 466_906),
    (7, 658_586, 661_338),
    (9, 853_018, 855_770),
    (18, 1_727_962, 1_730_714),
    (200, 19_421_274, 19_424_026),
]
CIFAR_MACS = {3: 40.55e6, 5: 68.86e6, 7: 97.17e6, 9: 125.49e6, 18: 252.89e6, 200: 2.829e9}


@pytest.mark.parametrize(("n", "option_a", "option_b"), CIFAR_PARAMS)
def test_cifar_params_match_reference(n, option_a, option_b):
    depth = 6 * n + 2
    assert model_counts(resolve(f"cifar-resnet{depth}"))[0] == option_a
    assert model_counts(resolve(f"cifar-plain{depth}"))[0] == option_a  # same parameters as the residual net
    assert model_counts(resolve(f"cifar-resnet{depth}-B"))[0] == option_b
    assert option_a == 97_216 * n - 21_926  # the closed form agrees with the table


@pytest.mark.parametrize("n", sorted(CIFAR_MACS))
def test_cifar_macs_match_closed_form(n):
    _, macs = model_counts(resolve(f"cifar-resnet{6 * n + 2}"))
    assert macs == 443_008 + 2_359_296 * (6 * n - 1)
    assert macs == pytest.approx(CIFAR_MACS[n], rel=1e-3)


# Exact counts of Table 1's nets with options A/B/C; option B's equal torchvision's resnet18..152.
IMAGENET_PARAMS = {
    "resnet18-A": 11_515_688, "resnet18-B": 11_689_512, "resnet18-C": 12_043_816,
    "resnet34-A": 21_623_848, "resnet34-B": 21_797_672, "resnet34-C": 22_716_840,
    "resnet50": 25_557_032, "resnet101": 44_549_160, "resnet152": 60_192_808,
    "plain18": 11_515_688, "plain34": 21_623_848,
}


@pytest.mark.parametrize(("name", "params"), sorted(IMAGENET_PARAMS.items()))
def test_imagenet_params_match_reference(name, params):
    assert model_counts(resolve(name))[0] == params


# Table 1 multiply-adds with the paper's stride on the first 1×1, and torchvision's "v1.5" figures.
V1_MACS = {"resnet18": 1.814e9, "resnet34": 3.664e9, "resnet50": 3.858e9, "resnet101": 7.570e9, "resnet152": 11.282e9}
TABLE1 = {"resnet18": 1.8e9, "resnet34": 3.6e9, "resnet50": 3.8e9, "resnet101": 7.6e9, "resnet152": 11.3e9}
V15_MACS = {"resnet50-v1.5": 4.089e9, "resnet101-v1.5": 7.801e9, "resnet152-v1.5": 11.514e9}


@pytest.mark.parametrize("name", sorted(V1_MACS))
def test_imagenet_macs_within_one_percent_of_table1(name):
    _, macs = model_counts(resolve(name))
    assert macs == pytest.approx(V1_MACS[name], rel=1e-3)
    # Table 1 prints one decimal (3.664 G as "3.6", 3.858 G as "3.8"), so only 2% can be asked of it.
    assert macs == pytest.approx(TABLE1[name], rel=0.02)
    assert resolve(name).paper_macs == TABLE1[name]


@pytest.mark.parametrize("name", sorted(V15_MACS))
def test_v15_stride_costs_what_torchvision_does(name):
    assert model_counts(resolve(name))[1] == pytest.approx(V15_MACS[name], rel=1e-3)


def test_vgg16_counts_match_the_known_figures():
    params, macs = model_counts(resolve("vgg16"))
    assert params == 138_357_544  # torchvision's vgg16, the 138M of Simonyan & Zisserman's Table 2
    # §4.1 puts VGG-16 at 15.3 billion FLOPs; its 13 convs alone have 15.35 G multiply-adds, fc6-fc8 0.12 G more.
    assert macs == 15_470_264_320 and macs == pytest.approx(15.3e9, rel=0.02)


def test_counting_on_a_real_model_equals_meta_counting():
    spec = resolve("resnet20")
    model = spec.build()
    assert (count_params(model), count_macs(model, spec.input_size)) == model_counts(spec)
