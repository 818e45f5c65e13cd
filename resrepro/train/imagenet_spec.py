"""``ImageNetSpec``: the description of one ImageNet run (§3.4), written to ``config.json`` like ``RunSpec``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resrepro.errors import ResreproError

# Where or how fast a run is computed, not what it computes: outside the config hash.
RUNTIME_FIELDS = ("data_dir", "device", "compile", "workers", "checkpoint_every")
DEFAULT_DATA_DIR = "~/.cache/resrepro/data/imagenet"
# The ImageFolders the trainer reads: ImageNet-1k, or the tiny scale's digits (written on first use).
DATASETS = ("imagenet", "digits")


@dataclass(frozen=True)
class ImageNetSpec:
    """An ImageNet run. Defaults are the paper's recipe (§3.4); ``batch_size`` is global over all GPUs."""

    model: str = "resnet34"  # an ImageNet registry name (resnet18..152, plain18/34, -A/-B/-C, -v1.5)
    dataset: str = "imagenet"  # an ImageFolder DATA_DIR/{train,val}/<wnid>/; digits: the tiny scale's
    seed: int = 0
    iters: int = 600_000
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # Deviation: the paper divides lr by 10 "when the error plateaus"; we drop at fixed iterations, ~30/60/90
    # epochs of 1.28M images at batch 256.
    milestones: tuple[int, ...] = (150_000, 300_000, 450_000)
    lr_decay: float = 0.1
    normalize: str = "pixel-mean"
    # §3.4: shorter side uniform in [256, 480], a random 224 crop; testing resizes the shorter side to 256
    # (the range's lower end) for the center and 10 crops. The tiny scale sets 32..40 and 28 for digits.
    scale: tuple[int, int] = (256, 480)
    crop: int = 224
    test_scales: tuple[int, ...] = (224, 256, 384, 480, 640)  # Table 4's multi-scale shorter sides
    num_classes: int | None = None  # None: one output per class folder (1000 on ImageNet)
    width: int = 64  # conv1/conv2_x filters (64 in Table 1); the tiny scale narrows it
    # Micro-batches per process and step, gradients accumulated: BN statistics per micro-batch, so one GPU
    # computes what `accumulate` GPUs would (the paper's 8 GPUs: batch 256, BN over 32 images each).
    accumulate: int = 1
    eval_every: int = 5_000
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    data_dir: str | None = None  # default: DEFAULT_DATA_DIR, or DIGITS_DIR for digits (see data_root)
    device: str = "auto"
    compile: bool | None = None  # None: on for CUDA
    workers: int = 8  # DataLoader processes per GPU (JPEG decoding is the bottleneck)
    checkpoint_every: int = 5_000

    def __post_init__(self) -> None:
        for name in ("milestones", "scale", "test_scales"):  # lists from JSON/TOML: tuples stay hashable
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        check(self)

    def replace(self, **changes: Any) -> ImageNetSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "milestones": list(self.milestones), "scale": list(self.scale),
                "test_scales": list(self.test_scales), "family": "imagenet"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageNetSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k not in ("family", "config_hash")}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ResreproError(f"the ImageNet trainer has no setting {', '.join(unknown)}; "
                                f"known: {', '.join(sorted(names))}")
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]


def data_root(spec: ImageNetSpec) -> Path:
    """The ImageFolder root the run reads: ``data_dir``, or the dataset's default (digits: written if missing)."""
    if spec.dataset == "digits":
        from resrepro.data.imagenet_digits import DIGITS_DIR, digits_imagefolder

        return digits_imagefolder(spec.data_dir or DIGITS_DIR)
    return Path(spec.data_dir or DEFAULT_DATA_DIR).expanduser()


def check(spec: ImageNetSpec) -> None:
    """Raise a ResreproError for a spec that cannot run, naming the setting."""
    _check_model(spec.model)
    if spec.dataset not in DATASETS:
        raise ResreproError(f"the ImageNet trainer reads an ImageFolder: dataset 'imagenet' (ImageNet-1k) or "
                            f"'digits' (the tiny scale's, written on first use), not {spec.dataset!r}")
    low, high = spec.scale if len(spec.scale) == 2 else (0, -1)
    if not 0 < spec.crop <= low <= high:
        raise ResreproError(f"scale must be [low, high] shorter sides with crop <= low <= high, got scale "
                            f"{list(spec.scale)} and crop {spec.crop}")
    if not spec.test_scales or min(spec.test_scales) < 1:
        raise ResreproError(f"test_scales must be positive shorter sides, got {list(spec.test_scales)}")
    if spec.normalize not in ("pixel-mean", "mean-std") or spec.precision not in ("auto", "bf16", "fp32"):
        raise ResreproError("normalize must be pixel-mean or mean-std, precision auto, bf16 or fp32")
    for name in ("iters", "batch_size", "eval_every", "width", "accumulate", "checkpoint_every"):
        if getattr(spec, name) < 1:
            raise ResreproError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(spec, name)}")
    if list(spec.milestones) != sorted(spec.milestones):
        raise ResreproError(f"milestones must be increasing, got {list(spec.milestones)}")
    if spec.lr <= 0 or spec.workers < 0 or (spec.num_classes is not None and spec.num_classes < 1):
        raise ResreproError("lr must be positive, workers non-negative and num-classes at least 1")


def _check_model(name: str) -> None:
    """Raise unless ``name`` is an ImageNet net. A depth that is not one of Table 1's is answered with those
    depths, not with the CIFAR rule (depth 6n+2) by which the registry reads a name like resnet19."""
    from resrepro.models.registry import IMAGENET_DEPTHS, UnknownModelError, resolve

    try:
        imagenet = resolve(name).family == "imagenet"
    except UnknownModelError:
        depth = re.search(r"(?:resnet|plain)(\d+)", name.lower())
        if depth is None or int(depth[1]) in IMAGENET_DEPTHS:
            raise  # not a depth problem (a misspelling, plain18-A): the registry's message says what is wrong
        imagenet = False
    if not imagenet:
        raise ResreproError(f"{name} is not an ImageNet net: ImageNet depths are "
                            f"{', '.join(map(str, IMAGENET_DEPTHS))} (Table 1); CIFAR nets (depth 6n+2) train "
                            "with `resrepro train cifar`")
