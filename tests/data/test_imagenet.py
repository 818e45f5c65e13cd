"""The ImageNet ImageFolder pipeline: layout checks, §3.4 augmentation, PCA lighting, skipping bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DistributedSampler
from torchvision.transforms import v2

from resrepro.data.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PCA_EIGVAL,
    PCA_EIGVEC,
    PCALighting,
    check_imagenet_dir,
    check_num_classes,
    eval_transform,
    imagenet_loaders,
    skip_none_collate,
    train_transform,
)
from resrepro.errors import ResreproError

CLASSES = ["n01440764", "n01443537", "n01484850"]
TRAIN_SIZES = [(300, 400), (500, 260), (260, 300), (400, 300)]  # (width, height), assorted aspect ratios
VAL_SIZES = [(320, 240), (240, 320)]


def write_jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, "JPEG")


@pytest.fixture
def imagenet_dir(tmp_path: Path) -> Path:
    """3 classes × 4 train and × 2 val real JPEGs, plus one corrupt .JPEG in train (13 train files)."""
    root = tmp_path / "imagenet"
    for c, wnid in enumerate(CLASSES):
        for i, size in enumerate(TRAIN_SIZES):
            write_jpeg(root / "train" / wnid / f"{wnid}_{i}.JPEG", size, seed=10 * c + i)
        for i, size in enumerate(VAL_SIZES):
            write_jpeg(root / "val" / wnid / f"ILSVRC2012_val_{c}{i}.JPEG", size, seed=100 + 10 * c + i)
    (root / "train" / CLASSES[1] / "corrupt.JPEG").write_bytes(b"\xff\xd8 not really a jpeg" * 20)
    return root


def test_check_imagenet_dir_returns_splits_and_sorted_classes(imagenet_dir: Path) -> None:
    train_dir, val_dir, classes = check_imagenet_dir(imagenet_dir)
    assert (train_dir, val_dir, classes) == (imagenet_dir / "train", imagenet_dir / "val", CLASSES)


@pytest.mark.parametrize("breakage", ["missing-dir", "missing-val", "no-classes", "mismatched-classes"])
def test_bad_layouts_raise_with_the_expected_layout(imagenet_dir: Path, breakage: str) -> None:
    target = imagenet_dir
    if breakage == "missing-dir":
        target = imagenet_dir / "nope"
    elif breakage == "missing-val":
        (imagenet_dir / "val").rename(imagenet_dir / "validation")
    elif breakage == "no-classes":
        for path in (imagenet_dir / "val").rglob("*.JPEG"):
            path.unlink()
        for wnid in CLASSES:
            (imagenet_dir / "val" / wnid).rmdir()
    else:
        (imagenet_dir / "val" / CLASSES[2]).rename(imagenet_dir / "val" / "n99999999")
    with pytest.raises(ResreproError, match=r"DIR/train/<wnid>/\*\.JPEG") as info:
        check_imagenet_dir(target)
    assert "\n" not in str(info.value)
    if breakage == "no-classes":
        assert f"no class folders in {imagenet_dir / 'val'};" in str(info.value)


def test_loaders_skip_and_count_the_corrupt_image(imagenet_dir: Path) -> None:
    # One batch of all 13 train files, so drop_last cannot hide the corrupt one.
    train, val = imagenet_loaders(imagenet_dir, batch_size=13, workers=0)
    batches = list(train)
    assert len(batches) == 1
    images, targets = batches[0]
    assert images.shape == (12, 3, 224, 224) and images.dtype == torch.float32
    assert sorted(targets.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert train.dataset.skipped == 1
    assert train.drop_last and not val.drop_last
    val_images, val_targets = next(iter(val))
    assert val_images.shape == (6, 3, 224, 224) and sorted(val_targets.tolist()) == [0, 0, 1, 1, 2, 2]
    assert val.dataset.skipped == 0


def test_skipped_count_is_shared_across_worker_processes(imagenet_dir: Path) -> None:
    (imagenet_dir / "val" / CLASSES[0] / "truncated.JPEG").write_bytes(
        (imagenet_dir / "val" / CLASSES[0] / "ILSVRC2012_val_00.JPEG").read_bytes()[:300]
    )
    _, val = imagenet_loaders(imagenet_dir, batch_size=2, workers=2)
    assert val.persistent_workers
    seen = sum(len(targets) for _, targets in val)  # 4 batches of 2 spread over 2 worker processes
    assert (seen, val.dataset.skipped) == (6, 1)


def test_distributed_loaders_use_a_distributed_sampler(imagenet_dir: Path, tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        train, val = imagenet_loaders(imagenet_dir, batch_size=4, workers=0, distributed=True, seed=3)
    finally:
        dist.destroy_process_group()
    assert isinstance(train.sampler, DistributedSampler) and isinstance(val.sampler, DistributedSampler)
    assert train.sampler.shuffle and train.sampler.seed == 3 and not val.sampler.shuffle
    assert train.batch_size == 4 and train.drop_last


def test_collate_drops_failed_samples_and_gives_none_for_an_all_failed_batch() -> None:
    images, targets = skip_none_collate([None, (torch.zeros(3, 2, 2), 1), None, (torch.ones(3, 2, 2), 2)])
    assert images.shape == (2, 3, 2, 2) and targets.tolist() == [1, 2]
    assert skip_none_collate([None, None]) is None


def test_scale_augmentation_draws_the_shorter_side_uniformly_from_256_to_480() -> None:
    resize = next(t for t in train_transform().transforms if isinstance(t, v2.RandomResize))
    image = Image.new("L", (3, 2))  # tiny, wide and one channel: cheap to resize 1000 times
    torch.manual_seed(0)
    sides = np.array([min(resize(image).size) for _ in range(1000)])
    assert sides.min() >= 256 and sides.max() <= 480
    assert sides.min() <= 262 and sides.max() >= 474
    assert abs(sides.mean() - 368) < 8
    counts = np.histogram(sides, bins=5, range=(256, 481))[0]  # 45 integers per bin: 200 ± 13 draws
    assert counts.min() > 150 and counts.max() < 250


@pytest.mark.parametrize("size", TRAIN_SIZES)
def test_train_and_eval_transforms_give_224_crops(size: tuple[int, int]) -> None:
    image = Image.new("RGB", size, (10, 200, 30))
    assert train_transform()(image).shape == (3, 224, 224)
    assert eval_transform()(image).shape == (3, 224, 224)


@pytest.mark.parametrize(("normalize", "std"), [("pixel-mean", (1.0, 1.0, 1.0)), ("mean-std", IMAGENET_STD)])
def test_normalisation_subtracts_the_mean_and_divides_only_for_mean_std(normalize: str, std: tuple) -> None:
    image = Image.new("RGB", (300, 260), (128, 64, 255))
    expected = [(v / 255 - m) / s for v, m, s in zip((128, 64, 255), IMAGENET_MEAN, std, strict=True)]
    for transform in (train_transform(normalize, lighting=0), eval_transform(normalize)):
        out = transform(image)
        for c in range(3):
            torch.testing.assert_close(out[c], torch.full((224, 224), expected[c]), atol=1e-5, rtol=0)


def test_unknown_normalisation_raises() -> None:
    with pytest.raises(ResreproError, match="pixel-mean"):
        train_transform("imagenet")


def test_pca_constants_are_the_published_ones() -> None:
    assert PCA_EIGVAL.tolist() == pytest.approx([0.2175, 0.0188, 0.0045])
    assert PCA_EIGVEC.tolist() == [
        pytest.approx([-0.5675, 0.7192, 0.4009]),
        pytest.approx([-0.5808, -0.0045, -0.8140]),
        pytest.approx([-0.5836, -0.6948, 0.4203]),
    ]


def test_pca_lighting_adds_eigvec_times_alpha_times_eigval(monkeypatch: pytest.MonkeyPatch) -> None:
    alpha = [0.3, -1.2, 2.0]
    monkeypatch.setattr(PCALighting, "sample_alpha", lambda self: torch.tensor(alpha) * self.std)
    eigval = [0.2175, 0.0188, 0.0045]
    eigvec = [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
    offset = [sum(eigvec[i][j] * 0.1 * alpha[j] * eigval[j] for j in range(3)) for i in range(3)]
    image = torch.rand(3, 5, 7)
    out = PCALighting(std=0.1)(image)
    torch.testing.assert_close(out - image, torch.tensor(offset).view(3, 1, 1).expand(3, 5, 7))


def test_pca_lighting_is_in_the_train_transform_with_std_0_1_and_random() -> None:
    lights = [t for t in train_transform().transforms if isinstance(t, PCALighting)]
    assert [t.std for t in lights] == [0.1]
    assert not any(isinstance(t, PCALighting) for t in train_transform(lighting=0).transforms)
    torch.manual_seed(0)
    offsets = torch.stack([lights[0](torch.zeros(3, 1, 1)).flatten() for _ in range(2000)])
    # The offsets' covariance is eigvec diag((0.1 eigval)²) eigvec^T; its largest direction is eigvec[:, 0].
    assert offsets.mean(0).abs().max() < 2e-3
    assert offsets[:, 0].std() == pytest.approx(0.1 * 0.2175 * 0.5675, rel=0.1)


def test_check_num_classes() -> None:
    check_num_classes(3, CLASSES)
    check_num_classes(1000, CLASSES)
    with pytest.raises(ResreproError, match="num_classes >= 3"):
        check_num_classes(2, CLASSES)
