"""ImageNet from an ImageFolder on disk: layout checks, the paper's §3.4 training augmentation (scale, crop,
flip, PCA lighting), the test crops (center, 10-crop, whole image), and datasets that skip undecodable images.

Loader workers decode, rescale and crop, and ship uint8 pixels (a quarter of float32's bytes to pinned memory and
the device); conversion to float, the flip, PCA lighting and normalisation run batched on the device
(:class:`ToInput`), as CIFAR's pipeline does. The flip and the lighting are still drawn in the worker, from the
sample's own seed, so a batch is the same on every device and a resume replays the same draws."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.utils.data import default_collate
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

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

    def offset(self) -> torch.Tensor:
        """One draw of the per-channel offset (3,), float32."""
        return PCA_EIGVEC @ (self.sample_alpha() * PCA_EIGVAL)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image + self.offset().to(image.dtype).view(3, 1, 1)


class ScaleCrop(nn.Module):
    """§3.4's scale augmentation: the image rescaled so that its shorter side is uniform in the integers ``scale``,
    then a random ``crop`` square of it — computed as one resize of the square's source region, so the rest of the
    rescaled image is never made (the resize step 2.8x faster than rescaling the whole image, on 500x375-640x480
    JPEGs). The draws are those of ``v2.RandomResize(scale[0], scale[1] + 1)`` then ``v2.RandomCrop(crop)``, and
    the output size and scale factor theirs; the pixels match theirs to within 2 of 255 (PIL rounds between its
    two passes)."""

    def __init__(self, scale: tuple[int, int] = (256, 480), crop: int = 224) -> None:
        super().__init__()
        self.scale, self.crop = scale, crop

    def params(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The rescaled size (width, height) and the crop's top and left, drawn as torchvision draws them."""
        # RandomResize, not RandomShortestSize: the latter truncates int(side * ratio), so a drawn 256 can come out
        # as 255, outside the paper's range. The longer side is truncated as torchvision's resize does.
        side = int(torch.randint(self.scale[0], self.scale[1] + 1, ()))
        w, h = (side, int(side * height / width)) if width <= height else (int(side * width / height), side)
        top = int(torch.randint(0, h - self.crop + 1, ())) if h > self.crop else 0
        left = int(torch.randint(0, w - self.crop + 1, ())) if w > self.crop else 0
        return w, h, top, left

    def forward(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        w, h, top, left = self.params(width, height)
        sx, sy = width / w, height / h
        box = (left * sx, top * sy, min((left + self.crop) * sx, width), min((top + self.crop) * sy, height))
        return image.resize((self.crop, self.crop), Image.BILINEAR, box=box)


class DrawFlipLighting(nn.Module):
    """The last two random steps of §3.4's augmentation, drawn here (in the worker, from the sample's seed) and
    applied on the device by :class:`ToInput`: ``image -> (image, flip, offset)``. The draws are those of
    ``v2.RandomHorizontalFlip`` (one ``torch.rand(1)``) and :class:`PCALighting`, in that order."""

    def __init__(self, lighting: float = 0.1) -> None:
        super().__init__()
        self.lighting = PCALighting(lighting) if lighting > 0 else None

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flip = torch.rand(1)[0] < 0.5
        offset = self.lighting.offset() if self.lighting is not None else torch.zeros(3)
        return image.as_subclass(torch.Tensor), flip, offset


class ToInput:
    """Batches of uint8 crops N×C×H×W on ``device`` as the net's float32 input: scaled to [0, 1], flipped where
    ``flips``, plus each image's PCA lighting ``offsets`` (N×3), normalised. The operations of the worker-side
    torchvision pipeline (``ToDtype(scale=True)``, :class:`PCALighting`, ``Normalize``), elementwise and in the same
    order, so a batch is the same to the bit on any device. The normalisation's constants are put on the device
    once: torchvision's ``normalize`` copies them from the host and checks the std on the device at every call,
    a host sync per batch."""

    def __init__(self, normalize: str, device: torch.device | str, channels_last: bool = False) -> None:
        norm = normalization(normalize)
        self.mean, self.std = (torch.tensor(v, dtype=torch.float32, device=device).view(3, 1, 1)
                               for v in (norm.mean, norm.std))
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor, flips: torch.Tensor | None = None,
                 offsets: torch.Tensor | None = None) -> torch.Tensor:
        if self.channels_last:  # reordering the uint8 batch costs a quarter of reordering the float one
            images = images.contiguous(memory_format=torch.channels_last)
        if flips is not None:
            images = torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)
        x = TF.to_dtype(images, torch.float32, scale=True)
        if offsets is not None:
            x = x + offsets.view(-1, 3, 1, 1)
        x = x.sub(self.mean).div_(self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


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


def to_uint8_image() -> v2.ToImage:
    """PIL image -> uint8 C×H×W tensor (what a worker ships)."""
    return v2.ToImage()


def train_transform(scale: tuple[int, int] = (256, 480), crop: int = 224, lighting: float = 0.1) -> v2.Compose:
    """§3.4 in the worker: shorter side uniform in the integers ``scale``, random ``crop`` square, then the flip and
    PCA lighting drawn (:class:`DrawFlipLighting`) for :class:`ToInput` to apply on the device."""
    return v2.Compose(
        [
            ScaleCrop(scale, crop),
            to_uint8_image(),
            # Lighting in [0, 1] pixel units before normalisation, as in fb.resnet.torch; with "pixel-mean" both
            # are additive, so the order is immaterial.
            DrawFlipLighting(lighting),
        ]
    )


def eval_transform(resize: int = 256, crop: int = 224) -> v2.Compose:
    """Center-crop testing (Fig. 4's validation curves): shorter side ``resize``, center ``crop`` square, uint8."""
    return v2.Compose([v2.Resize(resize), v2.CenterCrop(crop), to_uint8_image()])


def ten_crop_transform(resize: int = 256, crop: int = 224) -> v2.Compose:
    """Shorter side ``resize``, then the 4 corner and center ``crop`` squares and their flips: uint8 10×C×H×W."""
    return v2.Compose([v2.Resize(resize), to_uint8_image(), v2.TenCrop(crop), torch.stack])


def full_image_transform() -> v2.Compose:
    """The whole image, uncropped at its own size (uint8), for multi-scale testing to rescale."""
    return v2.Compose([to_uint8_image()])


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


def imagenet_sets(data_dir: str | Path, *, scale: tuple[int, int] = (256, 480), crop: int = 224,
                  ) -> tuple[SkippingImageFolder, SkippingImageFolder]:
    """The training set (§3.4 augmentation: ``crop`` squares of images whose shorter side is uniform in ``scale``)
    and the center-crop val set (the center ``crop`` of the image with shorter side ``scale[0]``), both shipping
    uint8 crops for :class:`ToInput`. An image that fails to decode is None (``skip_none_collate`` drops it) and
    counted in ``skipped``."""
    train_dir, val_dir, _ = check_imagenet_dir(data_dir)
    return (SkippingImageFolder(train_dir, train_transform(scale, crop)),
            SkippingImageFolder(val_dir, eval_transform(scale[0], crop)))
