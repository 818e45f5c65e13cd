"""CIFAR-10 from its on-disk files into uint8 tensors (torchvision's reader once the md5s match), and the
device-resident training pipeline of paper §4.2: batched pad-4 crop + flip, per-pixel mean subtraction,
exactly resumable shuffled batches."""

from __future__ import annotations

import contextlib
import pickle
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity

from resrepro.errors import ResreproError

DEFAULT_DATA_DIR = Path("~/.cache/resrepro/data")
DATASETS = ("cifar10", "synthetic", "digits")
# A constant, not the run's seed: the paper chose its schedule on one 45k/5k split, the same for every run.
VAL_SPLIT_SEED = 1512_03385


@dataclass
class ImageSet:
    """A whole image set in memory: ``images`` uint8 N×C×H×W (contiguous), ``labels`` int64 N."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device), self.num_classes, self.name)

    def subset(self, index: torch.Tensor, name: str) -> ImageSet:
        return ImageSet(self.images[index].contiguous(), self.labels[index], self.num_classes, name)


@dataclass
class Splits:
    train: ImageSet
    eval: ImageSet
    eval_split: str  # "test", or "val" when part of the training set is held out


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_split: int = 0,
    download: bool = False,
    verify: bool = True,
) -> Splits:
    """Load ``name`` (cifar10, synthetic or digits). ``val_split=N`` holds out N training images, the same
    ones for every seed, as the eval set instead of the test set (the paper's 45k/5k protocol)."""
    if name == "cifar10":
        root = DEFAULT_DATA_DIR if data_dir is None else Path(data_dir)
        train, test = _load_cifar10(root.expanduser(), download, verify)
    elif name in ("synthetic", "digits"):
        # tiny.py builds ImageSets, so it imports this module; importing it here avoids the cycle.
        from resrepro.data import tiny

        train, test = tiny.synthetic() if name == "synthetic" else tiny.digits()
    else:
        raise ResreproError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if val_split == 0:
        return Splits(train, test, "test")
    if not 0 < val_split < len(train):
        raise ResreproError(f"val_split must be between 0 and {len(train) - 1} for {name}, got {val_split}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    held_out, kept = order[:val_split].sort().values, order[val_split:].sort().values
    return Splits(train.subset(kept, f"{name}/train"), train.subset(held_out, f"{name}/val"), "val")


def _load_cifar10(root: Path, download: bool, verify: bool) -> tuple[ImageSet, ImageSet]:
    folder = root / CIFAR10.base_folder
    if download and _cifar10_problem(folder, verify):
        _download_cifar10(root, folder)
    problem = _cifar10_problem(folder, verify)
    if problem:
        raise ResreproError(problem)
    if verify:
        return _read_verified(root, train=True), _read_verified(root, train=False)
    # Unverified files may be anything: torchvision's reader would unpickle them as they come, which runs
    # whatever code a hostile file names, so they go through our restricted reader instead.
    train = _read_batches(folder, [f for f, _ in CIFAR10.train_list], "cifar10/train")
    return train, _read_batches(folder, [f for f, _ in CIFAR10.test_list], "cifar10/test")


def _needed(verify: bool) -> list[list[str]]:
    """The files read, with their md5s; torchvision's reader (the verified path) also reads the class names."""
    batches = CIFAR10.train_list + CIFAR10.test_list
    return batches + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]] if verify else batches


def _where(folder: Path) -> str:
    return (f"CIFAR-10 must be unpacked at {folder}/ (data_batch_1..5, test_batch, batches.meta; "
            f"from {CIFAR10.url})")


def _cifar10_problem(folder: Path, verify: bool) -> str | None:
    files = _needed(verify)
    missing = [f for f, _ in files if not (folder / f).is_file()]
    if missing:
        absent = "all of them" if len(missing) == len(files) else ", ".join(missing)
        return f"{_where(folder)}, which lacks {absent}; --download fetches it where the network allows"
    for f, md5 in files:
        if verify and not check_integrity(folder / f, md5):
            return (
                f"{folder / f} fails its md5 checksum (expected {md5}), so it is corrupt or incomplete: "
                f"delete {folder} and fetch it again (--download), or pass --skip-checksum if you modified "
                "it on purpose"
            )
    return None


def _read_verified(root: Path, train: bool) -> ImageSet:
    """torchvision's reader, for files whose md5 matched: they are the published bytes, so unpickling them
    is safe and their contents need no checks."""
    dataset = CIFAR10(root, train=train)
    # torchvision turns the files' N×C×H×W rows into N×H×W×C for PIL; transposing back is a free view.
    images = torch.from_numpy(dataset.data.transpose(0, 3, 1, 2)).contiguous()
    labels = torch.tensor(dataset.targets, dtype=torch.int64)
    return ImageSet(images, labels, 10, "cifar10/train" if train else "cifar10/test")


def _download_cifar10(root: Path, folder: Path) -> None:
    try:
        # torchvision prints progress to stdout, which is reserved for data (tables, JSON).
        with contextlib.redirect_stdout(sys.stderr):
            CIFAR10(root, train=False, download=True)  # train=False: afterwards it reads only 10k images
    except Exception as err:
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise ResreproError(f"downloading CIFAR-10 failed ({reason}); {_where(folder)}") from None


class _ArraysOnly(pickle.Unpickler):
    """Unpickling a file can run any code it names; CIFAR batches need only these (--skip-checksum path)."""

    SAFE = {("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype")} | {
        (f"numpy.{core}.{module}", fn)
        for core in ("core", "_core")
        for module, fn in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.SAFE:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    def bad(what: str) -> ResreproError:
        return ResreproError(f"{path} is not a CIFAR-10 batch file ({what}): delete it, fetch CIFAR-10 again")

    try:
        with open(path, "rb") as f:
            # latin1: the official files are Python 2 pickles, whose str keys and arrays need it.
            entry = _ArraysOnly(f, encoding="latin1").load()
    except Exception as err:  # any failure to decode a user's file is a data problem, not a bug
        raise bad(" ".join(f"{type(err).__name__}: {err}".split())) from None
    if not isinstance(entry, dict):
        raise bad(f"a pickled {type(entry).__name__}, not a dict")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    data, labels = entry.get("data"), entry.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise bad("'data' is not an N×3072 uint8 array")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise bad("'labels' is not a list of integers") from None
    if labels.shape != (len(data),):
        raise bad(f"{len(data)} images but 'labels' has shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise bad(f"labels range over {labels.min()}..{labels.max()}, not 0..9")
    return data, labels


def _read_batches(folder: Path, names: list[str], set_name: str) -> ImageSet:
    data, labels = zip(*(_read_batch(folder / name) for name in names), strict=True)
    # Each row holds the R, G and B planes of a 32×32 image in turn, so a reshape gives N×C×H×W.
    images = torch.from_numpy(np.concatenate(data).reshape(-1, 3, 32, 32))
    return ImageSet(images, torch.from_numpy(np.concatenate(labels)), 10, set_name)


def _pixel_sum(images: torch.Tensor, power: int) -> torch.Tensor:
    """Exact int64 sum over N of images**power, in chunks so 50k images never become one float64 copy."""
    total = torch.zeros(images.shape[1:], dtype=torch.int64, device=images.device)
    for start in range(0, len(images), 1024):
        total += images[start : start + 1024].long().pow(power).sum(0)
    return total


def pixel_mean(images: torch.Tensor) -> torch.Tensor:
    """The per-pixel mean of a uint8 N×C×H×W set: float32 C×H×W in [0,255] units (paper §4.2)."""
    return (_pixel_sum(images, 1).double() / len(images)).float()


def normalizer(train: ImageSet, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) in [0,255] units from the training set, so that inputs are ``(x - mean) / std``."""
    if mode == "pixel-mean":
        # The paper subtracts the per-pixel mean only. Dividing by 255 as well changes nothing the net can
        # compute: conv1 has no bias and is followed by BN, which undoes any scaling of its input.
        return pixel_mean(train.images), torch.tensor(255.0)
    if mode == "mean-std":
        n = len(train.images) * train.images.shape[2] * train.images.shape[3]
        mean = _pixel_sum(train.images, 1).sum((1, 2)).double() / n
        var = _pixel_sum(train.images, 2).sum((1, 2)).double() / n - mean**2
        return mean.float().view(-1, 1, 1), var.sqrt().float().view(-1, 1, 1)
    if mode == "imagenet":
        # torchvision's fixed ImageNet statistics on [0, 1] images, not the training set's: the preprocessing of
        # most public PyTorch nets, CIFAR ones included (akamaster/pytorch_resnet_cifar10).
        from resrepro.data.imagenet import IMAGENET_MEAN, IMAGENET_STD

        return 255 * torch.tensor(IMAGENET_MEAN).view(-1, 1, 1), 255 * torch.tensor(IMAGENET_STD).view(-1, 1, 1)
    raise ResreproError(f"unknown normalisation {mode!r}: choose 'pixel-mean' (the paper's) or 'mean-std'")


def _draw_crops(n: int, pad: int, generator: torch.Generator, flip: bool) -> tuple[torch.Tensor, ...]:
    dy = torch.randint(2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(2 * pad + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return dy, dx, flips


def _crop_flip(
    images: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor, flips: torch.Tensor
) -> torch.Tensor:
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = dy[:, None] + torch.arange(h, device=images.device)
    cols = dx[:, None] + torch.arange(w, device=images.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # reading the window's columns backwards = a flip
    # One gather over each flattened padded image: 5x faster on a CPU than 4-way advanced indexing.
    pixels = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.view(n, c, -1).gather(2, pixels).view(n, c, h, w)


def random_crop_flip(
    images: torch.Tensor, pad: int, generator: torch.Generator, flip: bool = True
) -> torch.Tensor:
    """Zero-pad uint8 N×C×H×W ``images`` by ``pad``, take a random H×W window of each, flip half of them.

    The random numbers come from the CPU ``generator``, so CPU and GPU runs see the same crops."""
    crops = _draw_crops(len(images), pad, generator, flip)
    return _crop_flip(images, pad, *(t.to(images.device) for t in crops))


def _normalize(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool
) -> torch.Tensor:
    # Reordering the uint8 batch costs a quarter of reordering the float one, and the layout carries over.
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return (images.float() - mean) / std


class BatchStream:
    """Endless shuffled training batches from an ImageSet held on ``device``; exactly resumable.

    Each epoch is a fresh permutation; the last incomplete batch is dropped, so a batch never spans two
    epochs (the paper counts iterations of full 128-image batches)."""

    skipped = 0  # images in memory never fail to decode (ImageNet's stream counts those that do)

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        *,
        device: torch.device | str,
        seed: int,
        augment: bool = True,
        pad: int = 4,
        mean: torch.Tensor,
        std: torch.Tensor,
        channels_last: bool = False,
    ) -> None:
        if not 0 < batch_size <= len(data):
            raise ResreproError(f"batch size must be between 1 and the {len(data)} images of {data.name}")
        self.device = torch.device(device)
        # The whole set lives on the device as uint8 (150 MB for CIFAR-10): no loader workers, no copies.
        self.images, self.labels = data.images.to(self.device), data.labels.to(self.device)
        self.mean, self.std = mean.to(self.device, torch.float32), std.to(self.device, torch.float32)
        self.batch_size, self.augment, self.pad, self.channels_last = batch_size, augment, pad, channels_last
        self.generator = torch.Generator().manual_seed(seed)
        # A saved state replays the same draws, which give the same batches only on a stream of this shape.
        self._shape = dict(num_images=len(data), batch_size=batch_size, augment=augment, pad=pad)
        self.epoch = 0  # completed epochs
        self._start_epoch()

    def _start_epoch(self) -> None:
        # An epoch's randomness is drawn at once: one host-to-device copy per epoch, and resuming needs only
        # the generator's state at the epoch's start and the position in it.
        self._epoch_rng_state = self.generator.get_state()
        n = len(self.labels)
        self._order = torch.randperm(n, generator=self.generator).to(self.device)
        if self.augment:
            self._crops = [t.to(self.device) for t in _draw_crops(n, self.pad, self.generator, flip=True)]
        self._position = 0

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        window = slice(self._position, self._position + self.batch_size)
        index = self._order[window]
        images = self.images[index]
        if self.augment:
            images = _crop_flip(images, self.pad, *(t[window] for t in self._crops))
        labels = self.labels[index]
        self._position += self.batch_size
        if self._position + self.batch_size > len(self.labels):
            self.epoch += 1
            self._start_epoch()
        return _normalize(images, self.mean, self.std, self.channels_last), labels

    def state_dict(self) -> dict:
        """Plain types and one uint8 tensor, loadable with ``torch.load(weights_only=True)``."""
        state = {"epoch": self.epoch, "position": self._position, "rng_state": self._epoch_rng_state}
        return state | self._shape

    def load_state_dict(self, state: dict) -> None:
        saved = {k: state.get(k) for k in self._shape}
        if saved != self._shape:
            raise ResreproError(
                f"the saved data stream had {saved}, this one {self._shape}: "
                "resume with the same dataset, batch size and augmentation"
            )
        self.generator.set_state(state["rng_state"].cpu())
        self._start_epoch()
        self.epoch, self._position = int(state["epoch"]), int(state["position"])


def eval_batches(
    data: ImageSet,
    batch_size: int,
    *,
    device: torch.device | str,
    mean: torch.Tensor,
    std: torch.Tensor,
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The whole set in order, unaugmented (the paper tests the single original image), last batch partial.

    Copies batch by batch; pass ``data.to(device)`` to keep an eval set resident on the device."""
    mean, std = mean.to(device, torch.float32), std.to(device, torch.float32)
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(device)
        yield _normalize(images, mean, std, channels_last), data.labels[start : start + batch_size].to(device)
