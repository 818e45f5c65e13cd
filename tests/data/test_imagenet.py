"""The ImageNet ImageFolder pipeline: layout checks, §3.4 augmentation (uint8 crops from the workers, finished
on the device to the bit of the float pipeline), PCA lighting, skipping bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from resrepro.data.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PCA_EIGVAL,
    PCA_EIGVEC,
    DrawFlipLighting,
    PCALighting,
    ScaleCrop,
    ToInput,
    check_imagenet_dir,
    check_num_classes,
    eval_transform,
    imagenet_sets,
    normalization,
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


def test_the_sets_ship_uint8_crops_and_skip_and_count_the_corrupt_image(imagenet_dir: Path) -> None:
    train, val = imagenet_sets(imagenet_dir)
    # One batch of all 13 train files, so nothing hides the corrupt one.
    (images, flips, offsets), targets = next(iter(DataLoader(train, batch_size=13, collate_fn=skip_none_collate)))
    assert images.shape == (12, 3, 224, 224) and images.dtype == torch.uint8
    assert flips.dtype == torch.bool and offsets.shape == (12, 3) and offsets.dtype == torch.float32
    assert sorted(targets.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert train.skipped == 1
    val_images, val_targets = next(iter(DataLoader(val, batch_size=6, collate_fn=skip_none_collate)))
    assert val_images.shape == (6, 3, 224, 224) and val_images.dtype == torch.uint8
    assert sorted(val_targets.tolist()) == [0, 0, 1, 1, 2, 2] and val.skipped == 0


def test_skipped_count_is_shared_across_worker_processes(imagenet_dir: Path) -> None:
    (imagenet_dir / "val" / CLASSES[0] / "truncated.JPEG").write_bytes(
        (imagenet_dir / "val" / CLASSES[0] / "ILSVRC2012_val_00.JPEG").read_bytes()[:300]
    )
    _, val = imagenet_sets(imagenet_dir)
    loader = DataLoader(val, batch_size=2, num_workers=2, collate_fn=skip_none_collate)
    seen = sum(len(targets) for _, targets in loader)  # 4 batches of 2 spread over 2 worker processes
    assert (seen, val.skipped) == (6, 1)


def reference_transform(normalize: str = "pixel-mean") -> v2.Compose:
    """§3.4 all on the CPU in float32, as the workers ran it before shipping uint8 crops."""
    return v2.Compose([ScaleCrop(), v2.RandomHorizontalFlip(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                       PCALighting(0.1), normalization(normalize)])


def test_scale_crop_is_torchvisions_rescale_then_crop_resizing_only_the_crop() -> None:
    rescale_then_crop = v2.Compose([v2.RandomResize(256, 481), v2.RandomCrop(224)])
    for seed, (w, h) in enumerate([*TRAIN_SIZES, (640, 480), (500, 333)]):
        image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
        torch.manual_seed(seed)
        expected = np.asarray(rescale_then_crop(image), dtype=int)
        after = torch.randint(1 << 30, ())  # the next draw: both made the same number of draws
        torch.manual_seed(seed)
        ours = np.asarray(ScaleCrop()(image), dtype=int)
        assert ours.shape == expected.shape == (224, 224, 3) and torch.randint(1 << 30, ()) == after
        assert np.abs(ours - expected).max() <= 2 and (ours == expected).mean() > 0.5  # PIL's rounding only


@pytest.mark.parametrize("normalize", ["pixel-mean", "mean-std"])
def test_the_device_finished_batch_is_the_float_pipelines_to_the_bit(normalize: str) -> None:
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8))
              for i, (w, h) in enumerate(TRAIN_SIZES)]
    expected, shipped = [], []
    for seed, image in enumerate(images * 2):  # 8 samples, each seeded as SeededDataset seeds it
        torch.manual_seed(seed)
        expected.append(reference_transform(normalize)(image))
        torch.manual_seed(seed)
        shipped.append(train_transform()(image))
    (crops, flips, offsets) = (torch.stack(t) for t in zip(*shipped, strict=True))
    assert crops.dtype == torch.uint8 and 0 < flips.sum() < 8  # both sides of the coin
    assert torch.equal(ToInput(normalize, "cpu")(crops, flips, offsets), torch.stack(expected))
    nhwc = ToInput(normalize, "cpu", channels_last=True)(crops, flips, offsets)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and torch.equal(nhwc, torch.stack(expected))


def test_collate_drops_failed_samples_and_gives_none_for_an_all_failed_batch() -> None:
    images, targets = skip_none_collate([None, (torch.zeros(3, 2, 2), 1), None, (torch.ones(3, 2, 2), 2)])
    assert images.shape == (2, 3, 2, 2) and targets.tolist() == [1, 2]
    assert skip_none_collate([None, None]) is None


def test_scale_augmentation_draws_the_shorter_side_uniformly_from_256_to_480() -> None:
    scale_crop = next(t for t in train_transform().transforms if isinstance(t, ScaleCrop))
    torch.manual_seed(0)
    sides = np.array([min(scale_crop.params(3, 2)[:2]) for _ in range(1000)])
    assert sides.min() >= 256 and sides.max() <= 480
    assert sides.min() <= 262 and sides.max() >= 474
    assert abs(sides.mean() - 368) < 8
    counts = np.histogram(sides, bins=5, range=(256, 481))[0]  # 45 integers per bin: 200 ± 13 draws
    assert counts.min() > 150 and counts.max() < 250


@pytest.mark.parametrize("size", TRAIN_SIZES)
def test_train_and_eval_transforms_give_224_crops(size: tuple[int, int]) -> None:
    image = Image.new("RGB", size, (10, 200, 30))
    assert train_transform()(image)[0].shape == (3, 224, 224)
    assert eval_transform()(image).shape == (3, 224, 224)


@pytest.mark.parametrize(("normalize", "std"), [("pixel-mean", (1.0, 1.0, 1.0)), ("mean-std", IMAGENET_STD)])
def test_normalisation_subtracts_the_mean_and_divides_only_for_mean_std(normalize: str, std: tuple) -> None:
    image = Image.new("RGB", (300, 260), (128, 64, 255))
    expected = [(v / 255 - m) / s for v, m, s in zip((128, 64, 255), IMAGENET_MEAN, std, strict=True)]
    crop, flip, offset = train_transform(lighting=0)(image)
    assert not offset.any()
    for out in (ToInput(normalize, "cpu")(crop[None], flip[None], offset[None])[0],
                ToInput(normalize, "cpu")(eval_transform()(image)[None])[0]):
        for c in range(3):
            torch.testing.assert_close(out[c], torch.full((224, 224), expected[c]), atol=1e-5, rtol=0)


def test_unknown_normalisation_raises() -> None:
    with pytest.raises(ResreproError, match="pixel-mean"):
        ToInput("imagenet", "cpu")


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


def test_pca_lighting_is_drawn_in_the_train_transform_with_std_0_1_and_random() -> None:
    [draw] = [t for t in train_transform().transforms if isinstance(t, DrawFlipLighting)]
    assert draw.lighting.std == 0.1
    assert next(t for t in train_transform(lighting=0).transforms if isinstance(t, DrawFlipLighting)).lighting is None
    torch.manual_seed(0)
    offsets = torch.stack([draw(torch.zeros(3, 1, 1, dtype=torch.uint8))[2] for _ in range(2000)])
    # The offsets' covariance is eigvec diag((0.1 eigval)²) eigvec^T; its largest direction is eigvec[:, 0].
    assert offsets.mean(0).abs().max() < 2e-3
    assert offsets[:, 0].std() == pytest.approx(0.1 * 0.2175 * 0.5675, rel=0.1)


def test_check_num_classes() -> None:
    check_num_classes(3, CLASSES)
    check_num_classes(1000, CLASSES)
    with pytest.raises(ResreproError, match="num_classes >= 3"):
        check_num_classes(2, CLASSES)
