"""ImageNet from an ImageFolder on disk: layout checks, the paper's §3.4 training augmentation (scale, crop,
flip, PCA lighting), the test crops (center, 10-crop, whole image), and loaders that skip undecodable images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, default_collate
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes
from torchvision.transforms import v2

from resrepro.data.decode import SkipCounter
from resrepro.errors import ResreproError

LAYOUT = "DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG (val/ with the same class folders as train/)"
NORMALIZE = ("pixel-mean", "mean-std")
# ImageNet's per-channel mean and std in [0, 1] units (torchvision's presets).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# AlexNet's PCA of ImageNet RGB pixels in [0, 1] units, as published in fb.resnet.torch (columns = eigvecs).
PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = torch.tensor(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ]
)


def class_folders(folder: str | Path) -> list[str]:
    """The sorted class folder names in ``folder`` (ImageFolder's class order); ResreproError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ResreproError(f"{folder} is not a directory; expected ImageNet as {LAYOUT}")
    try:
        # ImageFolder's own function, so the order (hence the label indices) cannot drift from the loader's.
        classes, _ = find_classes(folder)
    except FileNotFoundError:  # what it raises when there is no class folder
        raise ResreproError(f"no class folders in {folder}; expected ImageNet as {LAYOUT}") from None
    return classes


def check_imagenet_dir(data_dir: str | Path) -> tuple[Path, Path, list[str]]:
    """Check ``data_dir`` has train/ and val/ with the same class folders; return the dirs and classes."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise ResreproError(f"ImageNet directory {root} does not exist; expected {LAYOUT}")
    train_dir, val_dir = root / "train", root / "val"
    for split in (train_dir, val_dir):
        if not split.is_dir():
            raise ResreproError(f"missing {split}; expected ImageNet as {LAYOUT}")
    classes = class_folders(train_dir)
    val_classes = class_folders(val_dir)
    if val_classes != classes:
        only_train = sorted(set(classes) - set(val_classes))[:3]
        only_val = sorted(set(val_classes) - set(classes))[:3]
        raise ResreproError(
            f"val/ has {len(val_classes)} class folders, train/ has {len(classes)} (only in train:"
            f" {only_train}, only in val: {only_val}); sort val/ into the train class folders:"
            f" expected {LAYOUT}"
        )
    return train_dir, val_dir, classes


def check_val_dir(folder: str | Path) -> Path:
    """``folder`` as a val ImageFolder; ResreproError if it has no class folders or is the dataset root."""
    folder = Path(folder).expanduser()
    classes = class_folders(folder)
    if "train" in classes and "val" in classes:
        raise ResreproError(f"{folder} looks like the dataset root; pass its val/ folder: {folder / 'val'}")
    return folder


def check_num_classes(num_classes: int, classes: list[str]) -> None:
    """Raise if a model with ``num_classes`` outputs cannot score every class found on disk."""
    if num_classes < len(classes):
        raise ResreproError(
            f"the model has {num_classes} outputs but the data has {len(classes)} classes;"
            f" build the model with num_classes >= {len(classes)}"
        )


class PCALighting(nn.Module):
    """AlexNet's colour augmentation: add ``eigvec @ (alpha * eigval)`` to every pixel, alpha ~ N(0, std²)."""

    def __init__(self, std: float = 0.1) -> None:
        super().__init__()
        self.std = std

    def sample_alpha(self) -> torch.Tensor:
        return torch.randn(3) * self.std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        offset = PCA_EIGVEC @ (self.sample_alpha() * PCA_EIGVAL)
        return image + offset.to(image.dtype).view(3, 1, 1)


def normalization(normalize: str = "pixel-mean") -> v2.Normalize:
    """The input normalisation for [0, 1] float images: ``"pixel-mean"`` (the paper's) or ``"mean-std"``."""
    # The paper subtracts a per-pixel mean image. For random crops of randomly rescaled images that mean is
    # spatially uniform, so we subtract ImageNet's per-channel mean and, like the paper, do not divide by
    # a std. Documented deviation: the mean is torchvision's, not recomputed from the training set.
    if normalize == "pixel-mean":
        return v2.Normalize(IMAGENET_MEAN, (1.0, 1.0, 1.0))
    if normalize == "mean-std":
        return v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    raise ResreproError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")


def to_float_image() -> list[nn.Module]:
    """PIL image -> float32 tensor with values in [0, 1]."""
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


def train_transform(
    normalize: str = "pixel-mean",
    scale: tuple[int, int] = (256, 480),
    crop: int = 224,
    lighting: float = 0.1,
) -> v2.Compose:
    """§3.4: shorter side uniform in the integers ``scale``, random ``crop`` square, flip, PCA lighting."""
    pca = [PCALighting(lighting)] if lighting > 0 else []
    return v2.Compose(
        [
            # RandomResize, not RandomShortestSize: the latter truncates int(side * ratio), so a drawn 256
            # can come out as 255, outside the paper's range.
            v2.RandomResize(scale[0], scale[1] + 1),  # upper bound exclusive
            v2.RandomCrop(crop),
            v2.RandomHorizontalFlip(),
            *to_float_image(),
            # Lighting before normalisation keeps its std in [0, 1] pixel units, as in fb.resnet.torch; with
            # "pixel-mean" both are additive, so the order is immaterial.
            *pca,
            normalization(normalize),
        ]
    )


def eval_transform(normalize: str = "pixel-mean", resize: int = 256, crop: int = 224) -> v2.Compose:
    """Center-crop testing (Fig. 4's validation curves): shorter side ``resize``, center ``crop`` square."""
    return v2.Compose([v2.Resize(resize), v2.CenterCrop(crop), *to_float_image(), normalization(normalize)])


def ten_crop_transform(normalize: str = "pixel-mean", resize: int = 256, crop: int = 224) -> v2.Compose:
    """Shorter side ``resize``, then the 4 corner and center ``crop`` squares and their flips: 10×C×H×W."""
    return v2.Compose(
        [v2.Resize(resize), *to_float_image(), normalization(normalize), v2.TenCrop(crop), torch.stack]
    )


def full_image_transform(normalize: str = "pixel-mean") -> v2.Compose:
    """The whole image, uncropped at its own size, for multi-scale testing to rescale."""
    return v2.Compose([*to_float_image(), normalization(normalize)])


class SkippingImageFolder(ImageFolder):
    """An ImageFolder that returns None for an image it cannot decode and counts it in ``skipped`` (a
    :class:`SkipCounter`'s count, so it includes failures in DataLoader workers). Pair it with
    ``skip_none_collate``."""

    def __init__(self, root: str | Path, transform: Callable[[Any], Any] | None = None) -> None:
        try:
            super().__init__(str(root), transform=transform)
        except FileNotFoundError as exc:  # a class folder with no image files
            raise ResreproError(f"{exc} Expected ImageNet as {LAYOUT}") from None
        self._skips = SkipCounter()

    @property
    def skipped(self) -> int:
        return self._skips.count

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path, target = self.samples[index]
        image = self._skips.decode(lambda: self.loader(path))
        if image is None:
            return None
        if self.transform is not None:
            image = self.transform(image)
        return image, target


def skip_none_collate(batch: list[Any]) -> Any:
    """default_collate without the samples that failed to decode; None if all of them failed."""
    kept = [sample for sample in batch if sample is not None]
    return default_collate(kept) if kept else None


def imagenet_loaders(
    data_dir: str | Path,
    batch_size: int,
    *,
    workers: int = 8,
    normalize: str = "pixel-mean",
    distributed: bool = False,
    seed: int = 0,
    scale: tuple[int, int] = (256, 480),
    crop: int = 224,
) -> tuple[DataLoader, DataLoader]:
    """Train (§3.4 augmentation, shuffled, drop_last) and center-crop val loaders, ``batch_size`` per process.

    Training crops ``crop`` squares of images whose shorter side is uniform in ``scale``; validation takes
    the center ``crop`` of the image with shorter side ``scale[0]``.

    Batches are ``(images, targets)``, a batch may be short by the images that failed to decode (counted in
    ``loader.dataset.skipped``), and is None in the unlikely case that all did. With ``distributed`` the
    caller must call ``train_loader.sampler.set_epoch(epoch)`` each epoch; the val sampler pads the set
    with up to world_size - 1 repeated images so every process gets the same number.
    """
    train_dir, val_dir, _ = check_imagenet_dir(data_dir)
    train_set = SkippingImageFolder(train_dir, train_transform(normalize, scale, crop))
    val_set = SkippingImageFolder(val_dir, eval_transform(normalize, scale[0], crop))
    rank = 0
    train_sampler = val_sampler = None
    if distributed:
        rank = torch.distributed.get_rank()
        train_sampler = DistributedSampler(train_set, shuffle=True, seed=seed, drop_last=True)
        val_sampler = DistributedSampler(val_set, shuffle=False)
    common: dict[str, Any] = dict(
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        collate_fn=skip_none_collate,
    )
    # The generator seeds the shuffle and the workers' augmentation RNGs: distinct per (seed, rank).
    generator = torch.Generator().manual_seed(seed * 4096 + rank)
    train = DataLoader(
        train_set,
        shuffle=train_sampler is None,
        sampler=train_sampler,
        drop_last=True,
        generator=generator,
        **common,
    )
    val = DataLoader(val_set, shuffle=False, sampler=val_sampler, **common)
    return train, val
