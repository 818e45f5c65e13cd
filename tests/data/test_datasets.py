"""The one door to the in-memory sets: the fixed held-out val split, unknown names, the digits and synthetic sets."""

from __future__ import annotations

import pytest
import torch

from resrepro.data import load_dataset
from resrepro.errors import ResreproError


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(image.numpy().tobytes()) for image in images}


def test_val_split_holds_out_a_fixed_disjoint_part_of_train(fake_cifar):
    torch.manual_seed(1)  # the split must not depend on the global RNG (or the run's seed)
    splits = load_dataset("cifar10", fake_cifar.root, val_split=10, verify=False)
    torch.manual_seed(2)
    again = load_dataset("cifar10", fake_cifar.root, val_split=10, verify=False)
    assert splits.eval_split == "val" and splits.eval.name == "cifar10/val"
    assert (len(splits.train), len(splits.eval)) == (90, 10)
    assert torch.equal(splits.eval.images, again.eval.images)
    assert torch.equal(splits.train.labels, again.train.labels)
    held_out, kept = _rows(splits.eval.images), _rows(splits.train.images)
    assert not held_out & kept
    assert held_out | kept == _rows(torch.from_numpy(fake_cifar.train_data))


@pytest.mark.parametrize("val_split", [-1, 2_000])
def test_val_split_out_of_range(val_split):
    with pytest.raises(ResreproError, match="val_split must be between 0 and 1999"):
        load_dataset("synthetic", val_split=val_split)


def test_unknown_dataset():
    with pytest.raises(ResreproError, match="choose one of cifar10, synthetic, digits"):
        load_dataset("cifar100")


def test_digits_are_real_images_at_16x16():
    splits = load_dataset("digits")
    train, test = splits.train, splits.eval
    assert (len(train), len(test)) == (1497, 300)
    assert train.images.shape[1:] == (3, 16, 16) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey, repeated to 3 channels
    assert train.images.max() == 255 and train.images.min() == 0
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(10))
    assert torch.equal(load_dataset("digits").eval.labels, test.labels)


def test_synthetic_is_deterministic_and_learnable():
    first, second = load_dataset("synthetic"), load_dataset("synthetic")
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.eval.labels, second.eval.labels)
    train, test = first.train, first.eval
    assert (len(train), len(test)) == (2000, 500) and train.images.shape[1:] == (3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.bincount().tolist() == [200] * 10
    # Learnable: the class means of the training set classify the test set.
    means = torch.stack([train.images[train.labels == k].float().mean(0) for k in range(10)])
    distances = torch.cdist(test.images.float().flatten(1), means.flatten(1))
    assert (distances.argmin(1) == test.labels).float().mean() > 0.9
