"""The ImageNet test protocols: 10-crop and multi-scale score averaging by hand, and evaluate() end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as TF

from resrepro.data.imagenet import ToInput, full_image_transform, normalization, ten_crop_transform
from resrepro.errors import ResreproError
from resrepro.models import ImageNetResNet
from resrepro.train.imagenet_eval import MULTI_SCALES, evaluate, multi_scale_scores, ten_crop_scores

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]  # class k is dominated by channel k
VAL_SIZES = [(120, 90), (80, 110)]  # (width, height)


@pytest.fixture
def val_dir(tmp_path: Path) -> Path:
    """3 classes × 2 small noisy JPEGs, each dominated by its class's colour channel."""
    rng = np.random.default_rng(0)
    root = tmp_path / "val"
    for k, colour in enumerate(COLOURS):
        (root / f"n0{k}").mkdir(parents=True)
        for i, (w, h) in enumerate(VAL_SIZES):
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"n0{k}" / f"ILSVRC2012_val_{k}{i}.JPEG", "JPEG")
    return root


class ChannelMean(nn.Module):
    """Scores class k by the mean of channel k (rolled by ``shift``): an oracle for the coloured val set."""

    def __init__(self, shift: int = 0) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * x.mean(dim=(2, 3)).roll(self.shift, dims=1)


class SizeSpy(nn.Module):
    """Records input sizes; logits depend on the size only, so the average is known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        return torch.tensor([[x.shape[-2] / 100, 0.0, -x.shape[-1] / 200]]).expand(len(x), 3)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    ).eval()


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 crops as the device finishes them for the net (the paper's normalisation)."""
    return ToInput("pixel-mean", "cpu")(images)


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@torch.no_grad()
def test_ten_crop_of_a_constant_image_equals_one_crop() -> None:
    model = tiny_net()
    crops = to_input(ten_crop_transform()(Image.new("RGB", (300, 260), (90, 120, 30))))
    assert crops.shape == (10, 3, 224, 224)
    expected = model(crops[:1]).softmax(dim=1)
    torch.testing.assert_close(ten_crop_scores(model, crops[None]), expected)


@torch.no_grad()
def test_ten_crop_scores_are_the_mean_softmax_over_torchvisions_ten_crops() -> None:
    model = tiny_net()
    images = [random_image(300, 260, seed=1), random_image(256, 400, seed=2)]
    batch = torch.stack([to_input(ten_crop_transform()(image)) for image in images])
    expected = []
    for image in images:
        resized = TF.resize(image, [256])
        tensor = normalization()(TF.to_dtype(TF.to_image(resized), torch.float32, scale=True))
        probs = [model(crop[None]).softmax(dim=1)[0] for crop in TF.ten_crop(tensor, [224, 224])]
        assert not torch.allclose(probs[0], probs[5])  # the crops differ, so the average is a real test
        expected.append(sum(probs) / 10)
    torch.testing.assert_close(ten_crop_scores(model, batch), torch.stack(expected), atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_multi_scale_uses_the_five_shorter_sides_and_averages_softmax() -> None:
    spy = SizeSpy()
    image = to_input(full_image_transform()(random_image(60, 40))[None])[0]
    scores = multi_scale_scores(spy, image)
    assert MULTI_SCALES == (224, 256, 384, 480, 640)
    assert spy.sizes == [(s, int(s * 60 / 40)) for s in MULTI_SCALES]
    expected = torch.stack(
        [torch.tensor([h / 100, 0.0, -w / 200]).softmax(dim=0) for h, w in spy.sizes]
    ).mean(dim=0)
    assert scores.shape == (3,)
    torch.testing.assert_close(scores, expected)


@torch.no_grad()
def test_multi_scale_of_a_constant_image_equals_one_scale() -> None:
    model = tiny_net()
    image = to_input(full_image_transform()(Image.new("RGB", (50, 70), (10, 220, 130)))[None])[0]
    single = model(TF.resize(image, [224])[None]).softmax(dim=1)[0]
    torch.testing.assert_close(multi_scale_scores(model, image, (224, 256, 300)), single)


@pytest.mark.parametrize("protocol", ["center", "ten-crop", "multi-scale"])
def test_evaluate_scores_an_oracle_perfect_and_a_shifted_oracle_all_wrong(
    val_dir: Path, protocol: str
) -> None:
    kwargs = dict(protocol=protocol, workers=0, batch_size=4, scales=(64, 96))
    right = evaluate(ChannelMean(), val_dir, **kwargs)
    wrong = evaluate(ChannelMean(shift=1), val_dir, **kwargs)
    assert right["images"] == wrong["images"] == 6 and right["protocol"] == protocol
    assert (right["top1_error"], wrong["top1_error"]) == (0.0, 1.0)
    assert right["top5_error"] == wrong["top5_error"] == 0.0  # top-3 of 3 classes always hits
    assert 0 < right["loss"] < wrong["loss"]


@pytest.mark.parametrize("protocol", ["center", "ten-crop", "multi-scale"])
def test_evaluate_resnet18_end_to_end(val_dir: Path, protocol: str) -> None:
    torch.manual_seed(0)
    model = ImageNetResNet(18, num_classes=3)
    model.train()
    result = evaluate(model, val_dir, protocol, workers=0, scales=(64, 96), max_images=2)
    assert set(result) == {"top1_error", "top5_error", "loss", "images", "skipped", "protocol"}
    assert result["images"] == 2 and result["skipped"] == 0
    assert 0 <= result["top1_error"] <= 1 and 0 <= result["top5_error"] <= 1
    assert np.isfinite(result["loss"])
    assert model.training  # left in the mode it came in


def test_evaluate_skips_a_corrupt_image(val_dir: Path) -> None:
    (val_dir / "n01" / "broken.JPEG").write_bytes(b"garbage" * 10)
    result = evaluate(ChannelMean(), val_dir, "center", workers=0)
    assert (result["images"], result["skipped"], result["top1_error"]) == (6, 1, 0.0)


def test_evaluate_rejects_user_errors(val_dir: Path) -> None:
    with pytest.raises(ResreproError, match="protocol"):
        evaluate(ChannelMean(), val_dir, "five-crop", workers=0)
    with pytest.raises(ResreproError, match="num_classes >= 3"):
        evaluate(
            nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            val_dir,
            "center",
            workers=0,
        )
    (val_dir.parent / "train").mkdir()
    with pytest.raises(ResreproError, match="pass its val/ folder"):
        evaluate(ChannelMean(), val_dir.parent, "center", workers=0)
