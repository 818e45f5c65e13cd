"""CIFAR-10 from its on-disk files into uint8 tensors: torchvision's reader once the md5s match, our own
restricted reader (no arbitrary unpickling) for files the user chose not to verify."""

from __future__ import annotations

import contextlib
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity

from resrepro.data.pipeline import ImageSet
from resrepro.errors import ResreproError

DEFAULT_DATA_DIR = Path("~/.cache/resrepro/data")


def load_cifar10(
    data_dir: str | Path | None = None, *, download: bool = False, verify: bool = True
) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10's 50k training and 10k test images from ``data_dir`` (default: the cache); ``download`` fetches
    missing or damaged files, ``verify`` checks their md5s."""
    root = (DEFAULT_DATA_DIR if data_dir is None else Path(data_dir)).expanduser()
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
        # A sweep has no --download: name the one command that fetches, for whichever command failed here.
        return (f"{_where(folder)}, which lacks {absent}; where the network allows, `resrepro train cifar "
                f"--download --data-dir {folder.parent}` fetches it (then trains: Ctrl-C once the download is done)")
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
