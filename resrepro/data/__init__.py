"""Datasets as in-memory uint8 tensors (CIFAR-10, digits, synthetic) and the on-device batch pipeline."""

from resrepro.data.cifar import (
    BatchStream,
    ImageSet,
    Splits,
    eval_batches,
    load_dataset,
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
