"""Small offline datasets: a synthetic CIFAR-shaped set for tests and smoke runs, and scikit-learn's 8×8
handwritten digits (real images, as 3×16×16) to show the degradation problem on a CPU in seconds."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from resrepro.data.pipeline import ImageSet
from resrepro.errors import ResreproError

SYNTHETIC_SEED = 0
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 300


def synthetic(num_train: int = 2_000, num_test: int = 500) -> tuple[ImageSet, ImageSet]:
    """A deterministic, learnable 10-class set of 3×32×32 uint8 images: the same bytes on every call."""
    g = torch.Generator().manual_seed(SYNTHETIC_SEED)
    # Each class is a smooth random colour pattern under per-pixel noise. It is easy on purpose (the class
    # means alone classify the test set): a smoke test that training learns, not a benchmark.
    patterns = F.interpolate(torch.randn(10, 3, 4, 4, generator=g), size=(32, 32), mode="bilinear")
    n = num_train + num_test
    labels = torch.cat([torch.randperm(num_train, generator=g), torch.randperm(num_test, generator=g)]) % 10
    noise = torch.randn(n, 3, 32, 32, generator=g)
    images = (128 + 40 * patterns[labels] + 48 * noise).round().clamp(0, 255).to(torch.uint8)
    return (
        ImageSet(images[:num_train].contiguous(), labels[:num_train], 10, "synthetic/train"),
        ImageSet(images[num_train:].contiguous(), labels[num_train:], 10, "synthetic/test"),
    )


def digits() -> tuple[ImageSet, ImageSet]:
    """scikit-learn's 1,797 digits as uint8 3×16×16, split 1,497 train / 300 test by a fixed permutation."""
    try:
        from sklearn.datasets import load_digits  # imported here: sklearn costs a second to import
    except ImportError:
        raise ResreproError("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    bunch = load_digits()
    pixels = torch.from_numpy(bunch.images).float()[:, None] * (255 / 16)  # values 0..16 -> 0..255
    # 16×16 so that the CIFAR nets' two stride-2 stages still leave a 4×4 map.
    pixels = F.interpolate(pixels, size=(16, 16), mode="bilinear", align_corners=False, antialias=False)
    images = pixels.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(bunch.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    train, test = order[:-DIGITS_TEST_SIZE], order[-DIGITS_TEST_SIZE:]
    return (
        ImageSet(images[train], labels[train], 10, "digits/train"),
        ImageSet(images[test], labels[test], 10, "digits/test"),
    )
