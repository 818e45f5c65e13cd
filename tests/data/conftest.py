"""Fixtures for the data tests: a small CIFAR-10 written in torchvision's exact on-disk format."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from resrepro.data.pipeline import ImageSet


@dataclass
class FakeCifar:
    root: Path  # the data_dir; the files live in root / "cifar-10-batches-py"
    train_data: np.ndarray  # 100×3072 uint8, rows as in the files
    train_labels: np.ndarray
    test_data: np.ndarray
    test_labels: np.ndarray

    @property
    def folder(self) -> Path:
        return self.root / "cifar-10-batches-py"

    def write(self, name: str, entry: object) -> None:
        # Protocol 2, as the official Python 2 pickles.
        (self.folder / name).write_bytes(pickle.dumps(entry, protocol=2))


@pytest.fixture
def fake_cifar(tmp_path: Path) -> FakeCifar:
    rng = np.random.default_rng(0)
    train_data = rng.integers(0, 256, (100, 3072), dtype=np.uint8)
    test_data = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
    train_labels, test_labels = rng.integers(0, 10, 100), rng.integers(0, 10, 20)
    fake = FakeCifar(tmp_path / "data", train_data, train_labels, test_data, test_labels)
    fake.folder.mkdir(parents=True)
    for i in range(5):
        rows = slice(20 * i, 20 * (i + 1))
        entry = {"data": train_data[rows], "labels": train_labels[rows].tolist(), "batch_label": f"{i + 1}"}
        # The official files load with str keys; a copy re-pickled under Python 3 may have bytes keys.
        if i % 2:
            entry = {k.encode(): v for k, v in entry.items()}
        fake.write(f"data_batch_{i + 1}", entry)
    fake.write("test_batch", {b"data": test_data, b"labels": test_labels.tolist()})
    fake.write("batches.meta", {b"label_names": [f"class{k}" for k in range(10)], b"num_vis": 3072})
    return fake


@pytest.fixture
def labelled_set():
    """Makes random uint8 image sets with values in 1..255 (so 0 marks padding), labelled by their indices."""

    def make(n: int, *, size: int = 8, seed: int = 0) -> ImageSet:
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(1, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
        return ImageSet(images, torch.arange(n), n, "test/labelled")

    return make
