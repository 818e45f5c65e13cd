"""Writes small ImageNet-layout folders of real JPEG files (DIR/train/<wnid>/*.JPEG, DIR/val/<wnid>/*.JPEG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["n01440764", "n01443537", "n01484850"]


def write_imagefolder(root: Path, *, train: int = 4, val: int = 2, classes: list[str] = CLASSES, seed: int = 0,
                      sides: tuple[int, int] = (64, 97)) -> Path:
    """``train`` and ``val`` random-noise JPEGs per class, each side drawn from ``sides`` (assorted aspect ratios)."""
    rng = np.random.default_rng(seed)
    for wnid in classes:
        for split, count in (("train", train), ("val", val)):
            for i in range(count):
                h, w = rng.integers(*sides, 2)
                path = root / split / wnid / f"{wnid}_{i}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, "JPEG")
    return root
