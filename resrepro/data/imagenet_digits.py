"""The ImageNet experiments' tiny scale: scikit-learn's digits written once as an ImageNet-layout folder of
JPEG files, so the real ImageFolder pipeline (decode, scale augmentation, 10-crop, multi-scale) runs offline."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from resrepro.io import build_folder_once

DIGITS_DIR = "~/.cache/resrepro/data/digits-imagefolder"
# 8×8 digits upscaled to 32×32; the tiny scale trains 28-px crops of shorter sides 32..40, so a crop holds
# most of its digit.
SIDE = 32


def digits_imagefolder(root: str | Path = DIGITS_DIR) -> Path:
    """``root`` holding train/<digit>/*.JPEG (1,497 images) and val/<digit>/*.JPEG (300), written if missing.

    The split and pixels are :func:`resrepro.data.tiny.digits`' (the CIFAR tiny scale's), as RGB JPEGs of
    SIDE×SIDE. The folder is built beside ``root`` and renamed into place, so a reader never sees half of it
    and two processes building it at once both end with the same complete folder.
    """
    from resrepro.data.tiny import digits

    def build(folder: Path) -> None:
        for split, images in zip(("train", "val"), digits(), strict=True):
            for i, (image, label) in enumerate(zip(images.images, images.labels, strict=True)):
                path = folder / split / str(int(label)) / f"{split}_{i:04d}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = image.permute(1, 2, 0).numpy()
                Image.fromarray(pixels).resize((SIDE, SIDE), Image.BICUBIC).save(path, "JPEG", quality=90)

    return build_folder_once(root, build)
