"""The paper's ImageNet test protocols (§3.4): center crop, 10-crop (Tables 2–3) and fully-convolutional
multi-scale (Table 4), each giving top-1/top-5 error on a validation ImageFolder (its crops: data.imagenet)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.transforms.v2 import functional as TF

from resrepro.data.imagenet import (
    SkippingImageFolder,
    ToInput,
    check_num_classes,
    check_val_dir,
    eval_transform,
    full_image_transform,
    skip_none_collate,
    ten_crop_transform,
)
from resrepro.data.samplers import leave_stops_to_the_main_process
from resrepro.errors import ResreproError
from resrepro.train.metrics import Tally
from resrepro.train.runtime import evaluating

PROTOCOLS = ("center", "ten-crop", "multi-scale")  # the ImageNet test protocols of §3.4
MULTI_SCALES = (224, 256, 384, 480, 640)  # Table 4: shorter side of the whole image


def ten_crop_scores(model: Callable[[torch.Tensor], torch.Tensor], crops: torch.Tensor) -> torch.Tensor:
    """Class probabilities B×K for crops B×10×C×H×W: the softmax of each crop, averaged over the 10.

    We average probabilities, not logits: the paper says only that scores are averaged, and fb.resnet.torch
    averages the softmax outputs.
    """
    b, n = crops.shape[:2]
    return model(crops.flatten(0, 1)).float().softmax(dim=1).view(b, n, -1).mean(dim=1)


def multi_scale_scores(
    model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, scales: Sequence[int] = MULTI_SCALES
) -> torch.Tensor:
    """Class probabilities (K,) for one C×H×W image: softmax at each shorter-side scale, averaged over scales.

    The net pools adaptively, so its output on the whole image is the fully-convolutional score map averaged
    over positions (exact for a linear FC). Rescaling the normalised image equals rescaling the pixels:
    antialiased bilinear weights are non-negative and sum to 1, so they commute with a per-channel affine map.
    """
    probs = [
        model(TF.resize(image, [scale], antialias=True)[None]).float().softmax(dim=1)[0] for scale in scales
    ]
    return torch.stack(probs).mean(dim=0)


def _spread_indices(n: int, max_images: int | None) -> list[int]:
    # ImageFolder lists images class by class, so a prefix would cover only the first classes.
    m = n if max_images is None else min(n, max_images)
    return [i * n // m for i in range(m)]


def evaluate(
    model: nn.Module,
    dataset_root_val: str | Path,
    protocol: str,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    normalize: str = "pixel-mean",
    max_images: int | None = None,
    scales: Sequence[int] = MULTI_SCALES,
    workers: int = 4,
    resize: int = 256,
    crop: int = 224,
    tally: Tally | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> dict[str, Any]:
    """Top-1/top-5 error (fractions) and loss of ``model`` on the val ImageFolder under ``protocol``.

    ``protocol``: "center" (shorter side ``resize``, center ``crop``), "ten-crop" (``ten_crop_scores`` of
    the same sizes) or "multi-scale" (``multi_scale_scores`` over ``scales``, one image at a time). ``loss``
    is the negative log of the (averaged) probability of the true class, so for "center" the cross-entropy.
    ``max_images`` evaluates that many images spread evenly over the folder. With fewer than 5 classes
    "top5_error" is the top-min(5, classes) error. Images that fail to decode are skipped and counted in
    "skipped"; "images" counts those evaluated. The model is moved to ``device`` and left in its mode.
    ``tally``: the caller's (one keeping each image's probabilities, for an ensemble), else a new one.
    ``precision`` and ``channels_last``: the run's own, as every evaluation runs
    (:func:`~resrepro.train.runtime.evaluating`); an imported net's fp32 NCHW by default.
    """
    if protocol not in PROTOCOLS:
        raise ResreproError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    transform = {
        "center": eval_transform(resize, crop),
        "ten-crop": ten_crop_transform(resize, crop),
        "multi-scale": full_image_transform(),
    }[protocol]
    to_input = ToInput(normalize, device, channels_last)
    dataset = SkippingImageFolder(check_val_dir(dataset_root_val), transform)
    subset = Subset(dataset, _spread_indices(len(dataset), max_images))
    loader = DataLoader(
        subset,
        batch_size=1 if protocol == "multi-scale" else batch_size,  # images differ in size
        num_workers=workers,
        collate_fn=skip_none_collate,
        pin_memory=torch.device(device).type == "cuda",
        worker_init_fn=leave_stops_to_the_main_process,
    )
    tally = tally or Tally(device)
    with evaluating(model.to(device), precision, torch.device(device), channels_last) as forward:
        for batch in loader:
            if batch is None:
                continue
            images, targets = (t.to(device, non_blocking=True) for t in batch)
            if protocol == "center":
                probs = forward(to_input(images)).float().softmax(dim=1)
            elif protocol == "ten-crop":
                probs = ten_crop_scores(forward, to_input(images.flatten(0, 1)).unflatten(0, images.shape[:2]))
            else:
                probs = multi_scale_scores(forward, to_input(images)[0], scales)[None]
            check_num_classes(probs.shape[1], dataset.classes)
            tally.add_probs(probs, targets)
    if tally.images == 0:
        raise ResreproError(f"no readable images in {dataset_root_val}; check the files decode with PIL")
    return {**tally.result(), "skipped": dataset.skipped, "protocol": protocol}
