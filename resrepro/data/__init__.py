"""Datasets as in-memory uint8 tensors (CIFAR-10, digits, synthetic) and the on-device batch pipeline."""

from resrepro.data.datasets import Splits, load_dataset
from resrepro.data.pipeline import (
    BatchStream,
    ImageSet,
    eval_batches,
    normalizer,
    pixel_mean,
    random_crop_flip,
)

__all__ = [
    "BatchStream",
    "ImageSet",
    "Splits",
    "eval_batches",
    "load_dataset",
    "normalizer",
    "pixel_mean",
    "random_crop_flip",
]
