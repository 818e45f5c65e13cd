"""Run specifications: one frozen dataclass per run, written to ``config.json`` in its run directory.

``RunSpec`` holds what every family shares (the SGD recipe, its length, where and how fast it runs); each family
extends it: ``CifarSpec`` (§4.2), ``ImageNetSpec`` (§3.4) and ``DetectionSpec`` (appendix A). A field typed
``Literal[...]`` declares its allowed values once: the check below and the CLI's choices both read them from here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from resrepro.errors import ResreproError
from resrepro.train.spec_checks import check_imagenet_model, describe_type, field_types, fits, positive

Normalize = Literal["pixel-mean", "mean-std"]
Precision = Literal["auto", "bf16", "fp32"]  # auto: bf16 autocast on CUDA, fp32 on CPU
CifarDataset = Literal["cifar10", "digits", "synthetic"]
# Option A's zero channels: appended after the identity's (the paper's reading, fb.resnet.torch) or split half
# before, half after (akamaster/pytorch_resnet_cifar10). The same function class; a checkpoint fits only its own.
ZeroPad = Literal["append", "split"]
# The ImageFolders the ImageNet trainer reads: ImageNet-1k, or the tiny scale's digits (written on first use).
ImageNetDataset = Literal["imagenet", "digits"]
# PASCAL VOC's unions (train 07+12 / test VOC07; train 07++12 / test VOC12), COCO, and the tiny scale's offline
# sets of pasted digits (the same images in VOC layout and as COCO JSON).
DetectionDataset = Literal["voc07+12", "voc07++12", "coco", "digits-voc", "digits-coco"]

IMAGENET_DIR = "~/.cache/resrepro/data/imagenet"
# Images per batch-normalisation group: BN statistics are taken over this many images, wherever they are computed
# (one GPU of several, or one micro-batch of several on one GPU; see resrepro.train.groups). The paper's: CIFAR-10
# "a mini-batch size of 128 on two GPUs" (§4.2), so 64; ImageNet batch 256 on the reference implementations' 8
# GPUs (the paper names no count), so 32. A smaller batch is one group.
CIFAR_BN_GROUP = 64
IMAGENET_BN_GROUP = 32
SEEDS = 2**32  # seeds 0..2**32-1: the ImageNet loader derives seed * 4096 + rank, which must fit torch's 64 bits
# Every family's spec type by its name, as config.json records it; a spec class that sets ``family`` enters
# itself when it is defined, so reading a config.json needs no list of families.
SPEC_TYPES: dict[str, type[RunSpec]] = {}


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """What every run has. Defaults are the paper's where both recipes agree (SGD, momentum 0.9, wd 1e-4)."""

    family: ClassVar[str]
    # Where or how fast a run is computed, not what it computes: a run may be resumed with other values for
    # these, and they stay out of the config hash.
    RUNTIME: ClassVar[tuple[str, ...]] = ("data_dir", "device", "compile", "channels_last", "checkpoint_every",
                                          "tensorboard")
    # Fields added after runs were hashed, with the value every earlier run had: while a field holds it, it stays
    # out of the hash and of a run's setting, so earlier runs keep their hashes and stay seeds of one experiment
    # with later ones.
    ADDED: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "family" in cls.__dict__:
            SPEC_TYPES[cls.family] = cls

    model: str
    dataset: str
    seed: int = 0
    iters: int
    batch_size: int
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...]
    lr_decay: float = 0.1
    normalize: Normalize = "pixel-mean"
    width: int  # first-stage filters; the tiny scale narrows the paper's
    eval_every: int
    precision: Precision = "auto"
    data_dir: str | None = None
    device: str = "auto"
    compile: bool | None = None  # None: on for CUDA
    channels_last: bool | None = None  # None: wherever `resrepro bench` measured it faster (see runtime.py)
    checkpoint_every: int
    tensorboard: bool = False

    def __post_init__(self) -> None:
        for name, kind in field_types(type(self)).items():  # lists from JSON/TOML: tuples stay hashable
            if typing.get_origin(kind) is tuple and isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        # Types first: a config.json or TOML file can hold anything, and the range checks compare numbers.
        for name, kind in field_types(type(self)).items():
            value = getattr(self, name)
            if typing.get_origin(kind) is not Literal and not fits(value, kind):
                shown = list(value) if isinstance(value, tuple) else value  # as JSON and TOML write it
                raise ResreproError(f"{name} should be {describe_type(kind)}, got {shown!r}")
        self.check()

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """What ``config.json`` holds: every field, tuples as lists, and the family."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        return {**d, "family": self.family}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k not in ("family", "config_hash")}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ResreproError(f"the {cls.family} trainer has no setting {', '.join(unknown)}; "
                                f"known: {', '.join(sorted(names))}")
        return cls(**d)

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> RunSpec:
        """The spec a run's own record (``config.json``, a checkpoint's spec) describes: a record written before
        a field existed is read as what it computed then (``upgrade``), not with today's default."""
        return cls.from_dict(cls.upgrade(dict(d)))

    @classmethod
    def upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        """An older record in today's fields (see :meth:`from_record`); nothing to do unless a family says."""
        return d

    def identity(self) -> dict[str, Any]:
        """What the run computes: the spec without its runtime fields. ``family`` enters for families other
        than CIFAR only, and an ``ADDED`` field only off its old value: CIFAR runs were hashed before either was
        recorded, and their hashes must not move."""
        return self.hashed_as_before({k: v for k, v in self.to_dict().items() if k not in self.RUNTIME
                                      and not (k == "family" and v == "cifar")
                                      and not is_added_default(self.ADDED, k, v)})

    def hashed_as_before(self, identity: dict[str, Any]) -> dict[str, Any]:
        """The identity with a field added since in the form earlier runs were hashed in (see ``bn_group``)."""
        return identity

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]

    def check(self) -> None:
        """Raise a ResreproError for a spec that cannot run, naming the setting."""
        for name, kind in field_types(type(self)).items():
            allowed = typing.get_args(kind) if typing.get_origin(kind) is Literal else ()
            if allowed and getattr(self, name) not in allowed:
                raise ResreproError(f"unknown {name} {getattr(self, name)!r}: choose {', '.join(allowed)}")
        for name in ("iters", "batch_size", "eval_every", "width", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ResreproError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.seed < SEEDS:
            raise ResreproError(f"seed must be in 0..{SEEDS - 1}, got {self.seed}")
        # A milestone at or past `iters` is allowed: it never comes, which is what every short run started with
        # the paper's 32k/48k does; refusing it would make those runs unreadable.
        # Strictly: a milestone given twice divides lr by 100 at once, which no schedule of the paper does.
        m = list(self.milestones)
        if any(a >= b for a, b in itertools.pairwise(m)) or any(i < 1 for i in m):
            twice = " (one given twice divides lr by 100 at once)" if len(set(m)) < len(m) else ""
            raise ResreproError(f"milestones must be increasing iterations >= 1, got {m}{twice}")
        positive("lr", self.lr)
        positive("lr_decay", self.lr_decay)
        if not 0 <= self.momentum < 1:  # NaN fails too; momentum 1 never forgets a gradient and diverges
            raise ResreproError(f"momentum must be in [0, 1), got {self.momentum} (paper: 0.9)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ResreproError(f"weight_decay must be a finite number >= 0, got {self.weight_decay} (paper: 1e-4)")


@dataclass(frozen=True, kw_only=True)
class CifarSpec(RunSpec):
    """A CIFAR-style run (6n+2 layers). Defaults are the paper's CIFAR-10 recipe (§4.2)."""

    family: ClassVar[str] = "cifar"
    RUNTIME: ClassVar[tuple[str, ...]] = (*RunSpec.RUNTIME, "eval_batch_size", "verify")
    ADDED: ClassVar[dict[str, Any]] = {"zero_pad": "append"}

    model: str = "resnet20"
    dataset: CifarDataset = "cifar10"
    iters: int = 64_000
    batch_size: int = 128
    milestones: tuple[int, ...] = (32_000, 48_000)
    # ResNet-110 (§4.2): lr 0.01 until training error < 80%, then back to lr. None: on for n >= 18.
    warmup: bool | None = None
    warmup_lr: float = 0.01
    warmup_until_error: float = 0.8
    augment: bool = True  # pad 4, random 32×32 crop, random horizontal flip
    pad: int = 4
    val_split: int = 0  # hold out this many training images and evaluate on them instead of the test set
    width: int = 16
    eval_every: int = 1_000
    grad_checkpoint: bool = False
    zero_pad: ZeroPad = "append"  # where option A's zero channels go (see ZeroPad)
    # Images per BN group (None: CIFAR_BN_GROUP, or the whole batch if smaller); ``--bn-group 128``: one group of
    # the paper's whole batch, what one GPU computes without splitting it (a deviation).
    bn_group: int | None = None
    eval_batch_size: int = 1_000
    checkpoint_every: int = 1_000
    verify: bool = True  # check the CIFAR-10 files' MD5 sums

    def __post_init__(self) -> None:
        _resolve_bn_group(self, CIFAR_BN_GROUP)
        super().__post_init__()

    @classmethod
    def upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        # Before bn_group, a CIFAR run normalised over its whole batch, in one process.
        return d if "bn_group" in d else {**d, "bn_group": d.get("batch_size", cls.batch_size)}

    def hashed_as_before(self, identity: dict[str, Any]) -> dict[str, Any]:
        # One group of the whole batch is what every run computed before bn_group: it hashes as they did.
        return {k: v for k, v in identity.items() if not (k == "bn_group" and v == self.batch_size)}

    @property
    def n(self) -> int:
        from resrepro.models.registry import resolve

        return resolve(self.model).n

    @property
    def uses_warmup(self) -> bool:
        return self.warmup if self.warmup is not None else self.n >= 18

    def check(self) -> None:
        from resrepro.models.registry import resolve

        if resolve(self.model).family != "cifar":
            raise ResreproError(f"{self.model} is an ImageNet net; use `resrepro train imagenet`")
        super().check()
        _check_bn_group(self)
        if self.eval_batch_size < 1 or self.val_split < 0 or self.pad < 0:
            raise ResreproError("eval-batch-size must be at least 1, val-split and pad non-negative")
        positive("warmup_lr", self.warmup_lr)
        if not 0 < self.warmup_until_error <= 1:  # a training error, 0..1: at 0 the warm-up would never end
            raise ResreproError(f"warmup_until_error is a training error in (0, 1], got {self.warmup_until_error}")
        arch = resolve(self.model)
        if self.zero_pad != "append" and (arch.plain or arch.shortcut != "A"):
            # Only option A pads with zeros: another value would change the hash and nothing the net computes.
            raise ResreproError(f"zero_pad is where option A's zero channels go; {self.model} has no option A "
                                "shortcuts, so leave it at append")


@dataclass(frozen=True, kw_only=True)
class ImageNetSpec(RunSpec):
    """An ImageNet run. Defaults are the paper's recipe (§3.4); ``batch_size`` is global over all GPUs."""

    family: ClassVar[str] = "imagenet"
    RUNTIME: ClassVar[tuple[str, ...]] = (*RunSpec.RUNTIME, "workers")
    ADDED: ClassVar[dict[str, Any]] = {"zero_init_residual": False}

    model: str = "resnet34"  # an ImageNet registry name (resnet18..152, plain18/34, -A/-B/-C, -v1.5)
    dataset: ImageNetDataset = "imagenet"  # an ImageFolder DATA_DIR/{train,val}/<wnid>/; digits: the tiny scale's
    iters: int = 600_000
    batch_size: int = 256
    # Deviation: the paper divides lr by 10 "when the error plateaus"; we drop at fixed iterations, ~30/60/90
    # epochs of 1.28M images at batch 256.
    milestones: tuple[int, ...] = (150_000, 300_000, 450_000)
    # §3.4: shorter side uniform in [256, 480], a random 224 crop; testing resizes the shorter side to 256
    # (the range's lower end) for the center and 10 crops. The tiny scale sets 32..40 and 28 for digits.
    scale: tuple[int, int] = (256, 480)
    crop: int = 224
    test_scales: tuple[int, ...] = (224, 256, 384, 480, 640)  # Table 4's multi-scale shorter sides
    num_classes: int | None = None  # None: one output per class folder (1000 on ImageNet)
    # Deviation, off by default (the paper's BN γ starts at 1): γ = 0 for the last BN of every residual branch, so
    # each residual block starts as its shortcut (Goyal et al. 2017, torchvision's zero_init_residual). The
    # tiny scale turns it on: without it the bottleneck nets were far from trained after its 1,200 iterations.
    zero_init_residual: bool = False
    width: int = 64  # conv1/conv2_x filters (64 in Table 1)
    # Images per BN group (None: IMAGENET_BN_GROUP, or the whole batch if smaller): the paper's 8 GPUs' 32 each,
    # however many GPUs train the run. Runs written before it recorded ``accumulate`` (micro-batches per step on
    # one GPU): batch_size / accumulate images per group, which is how they are read and hashed still.
    bn_group: int | None = None
    eval_every: int = 5_000
    workers: int = 8  # DataLoader processes per GPU (JPEG decoding is the bottleneck)
    checkpoint_every: int = 5_000

    def __post_init__(self) -> None:
        _resolve_bn_group(self, IMAGENET_BN_GROUP)
        super().__post_init__()

    @classmethod
    def upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        if "bn_group" in d:
            return d
        d = dict(d)
        accumulate, batch = d.pop("accumulate", 1), d.get("batch_size", cls.batch_size)
        if not (isinstance(accumulate, int) and isinstance(batch, int) and accumulate >= 1 and batch % accumulate == 0):
            raise ResreproError(f"accumulate {accumulate!r} does not divide batch_size {batch!r} into BN groups")
        return {**d, "bn_group": batch // accumulate}

    def hashed_as_before(self, identity: dict[str, Any]) -> dict[str, Any]:
        # Hashed as ``accumulate`` (groups per batch), as runs were before bn_group: an old run with accumulate 8
        # and a new one with bn_group 32 at batch 256 compute the same groups and share one hash.
        d = {k: v for k, v in identity.items() if k != "bn_group"}
        return {**d, "accumulate": self.batch_size // self.bn_group}

    def check(self) -> None:
        check_imagenet_model(self.model)
        if self.dataset not in typing.get_args(ImageNetDataset):
            raise ResreproError(f"the ImageNet trainer reads an ImageFolder: dataset 'imagenet' (ImageNet-1k) or "
                                f"'digits' (the tiny scale's, written on first use), not {self.dataset!r}")
        super().check()
        _check_bn_group(self)
        low, high = self.scale if len(self.scale) == 2 else (0, -1)
        if not 0 < self.crop <= low <= high:
            raise ResreproError(f"scale must be [low, high] shorter sides with crop <= low <= high, got scale "
                                f"{list(self.scale)} and crop {self.crop}")
        if not self.test_scales or min(self.test_scales) < 1:
            raise ResreproError(f"test_scales must be positive shorter sides, got {list(self.test_scales)}")
        if self.workers < 0 or (self.num_classes is not None and self.num_classes < 1):
            raise ResreproError("workers must be non-negative and num-classes at least 1")

    def data_root(self) -> Path:
        """The ImageFolder root the run reads: ``data_dir``, or the dataset's default (digits: written if
        missing)."""
        if self.dataset == "digits":
            from resrepro.data.imagenet_digits import DIGITS_DIR, digits_imagefolder

            return digits_imagefolder(self.data_dir or DIGITS_DIR)
        return Path(self.data_dir or IMAGENET_DIR).expanduser()


# Faster R-CNN's recipe per dataset. VOC (Ren et al. 2015, §4.1): one image per mini-batch, lr 0.001 for 60k
# mini-batches, then 0.0001 for 20k. COCO (this paper, appendix A): lr 0.001 for 240k iterations, then 0.0001 for
# 80k, 8 images per mini-batch (its RPN step's; we train RPN and Fast R-CNN jointly in one step, see
# DetectionSpec). The tiny sets take VOC's shape; their experiments set their own length.
DETECTION_RECIPES: dict[str, dict[str, Any]] = {
    "voc07+12": {"iters": 80_000, "milestones": (60_000,), "batch_size": 1},
    "voc07++12": {"iters": 80_000, "milestones": (60_000,), "batch_size": 1},
    "coco": {"iters": 320_000, "milestones": (240_000,), "batch_size": 8},
    "digits-voc": {"iters": 80_000, "milestones": (60_000,), "batch_size": 1},
    "digits-coco": {"iters": 320_000, "milestones": (240_000,), "batch_size": 8},
}


@dataclass(frozen=True, kw_only=True)
class DetectionSpec(RunSpec):
    """A Faster R-CNN fine-tuning run (appendix A): ``model`` is the backbone, an ImageNet net of the registry
    (vgg16 included). ``iters``, ``milestones`` and ``batch_size`` left at None take the dataset's recipe
    (DETECTION_RECIPES). RPN and Fast R-CNN are trained jointly (torchvision's approximate joint training), not
    in the alternating steps the paper's COCO recipe names.

    The backbone's initial weights come from ``backbone_run`` (a resrepro ImageNet run directory), from
    ``backbone_import`` + ``weights`` (a local torchvision file), or from nowhere (from scratch). Where they lie
    is a runtime matter; which weights they are is not: ``backbone_hash`` (the run's config hash, or the file's
    SHA-256) enters the config hash, and ``normalize`` is the backbone's pre-training normalisation.
    ``eval_error`` is 1 − the test split's benchmark mAP: VOC07 11-point mAP@.5 (voc07+12, digits-voc), VOC12 area
    mAP@.5 (voc07++12), COCO mAP@[.5:.95] (coco, digits-coco)."""

    family: ClassVar[str] = "detection"
    RUNTIME: ClassVar[tuple[str, ...]] = (*RunSpec.RUNTIME, "backbone_run", "weights", "workers")

    model: str = "resnet101"
    dataset: DetectionDataset = "voc07+12"
    iters: int | None = None
    batch_size: int | None = None  # images per mini-batch, over all processes
    milestones: tuple[int, ...] | None = None
    lr: float = 0.001
    weight_decay: float = 5e-4  # Faster R-CNN's, for VOC and COCO alike
    width: int = 64
    min_size: int = 600  # the shorter side; the longer is capped at max_size
    max_size: int = 1000
    anchor_sizes: tuple[int, ...] = (128, 256, 512)  # 3 areas x 3 aspect ratios = 9 anchors
    proposals_test: int = 300
    rois_per_image: int = 128  # Fast R-CNN's sampled RoIs per training image, a quarter foreground
    backbone_run: str | None = None
    backbone_import: str | None = None  # "torchvision:resnet101" (v1.5: stride on the 3x3) or "torchvision:vgg16"
    weights: str | None = None  # the local weights file of backbone_import
    backbone_hash: str | None = None
    eval_every: int = 10_000
    checkpoint_every: int = 5_000
    workers: int = 4  # image-decoding processes per GPU
    # torchvision's detector has data-dependent shapes (proposals, NMS): compiled, it recompiles every step.
    compile: bool | None = False
    channels_last: bool | None = False

    def __post_init__(self) -> None:
        if self.dataset not in DETECTION_RECIPES:
            raise ResreproError(f"unknown dataset {self.dataset!r}: choose {', '.join(DETECTION_RECIPES)}")
        for name, value in DETECTION_RECIPES[self.dataset].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if isinstance(self.milestones, list):  # from JSON/TOML; the base converts plain tuple fields only
            object.__setattr__(self, "milestones", tuple(self.milestones))
        super().__post_init__()

    def check(self) -> None:
        check_imagenet_model(self.model)
        super().check()
        if not 0 < self.min_size <= self.max_size:
            raise ResreproError(f"min_size and max_size must satisfy 0 < min_size <= max_size, got {self.min_size} "
                                f"and {self.max_size}")
        if not self.anchor_sizes or min(self.anchor_sizes) < 1 or min(self.proposals_test, self.rois_per_image) < 1 \
                or self.workers < 0:
            raise ResreproError("anchor_sizes must be positive, proposals_test and rois_per_image at least 1, "
                                "workers non-negative")
        if self.backbone_run is not None and self.backbone_import is not None:
            raise ResreproError("the backbone comes from --backbone-run or from --backbone-import, not both")
        if (self.backbone_import is None) != (self.weights is None):
            raise ResreproError("--backbone-import and --weights go together: a library name and its local weights "
                                "file (nothing is downloaded)")

    @property
    def from_scratch(self) -> bool:
        return self.backbone_run is None and self.weights is None


def spec_type(config: dict[str, Any]) -> type[RunSpec]:
    """The spec class of a ``config.json`` (no ``family``: a CIFAR run written before families were recorded)."""
    family = config.get("family", "cifar")
    if family not in SPEC_TYPES:
        raise ResreproError(f"unknown run family {family!r}: this resrepro trains {', '.join(SPEC_TYPES)}")
    return SPEC_TYPES[family]


def _resolve_bn_group(spec: RunSpec, default: int) -> None:
    """``bn_group`` None: the family's default, or one group of a smaller batch (kept as a number in config.json)."""
    if spec.bn_group is None and isinstance(spec.batch_size, int):
        object.__setattr__(spec, "bn_group", min(default, spec.batch_size))


def _check_bn_group(spec: RunSpec) -> None:
    if not (1 <= spec.bn_group <= spec.batch_size and spec.batch_size % spec.bn_group == 0):
        raise ResreproError(f"--bn-group {spec.bn_group} must divide --batch-size {spec.batch_size} into BN groups of "
                            "equal size")


def spec_from_config(config: dict[str, Any]) -> RunSpec:
    """The spec a ``config.json`` (or a checkpoint's ``spec``) describes, of its own family, read as what it
    computed when it was written (:meth:`RunSpec.from_record`)."""
    if not isinstance(config, dict):
        raise ResreproError(f"a run configuration is a JSON object, not {type(config).__name__}")
    try:
        return spec_type(config).from_record(config)
    except TypeError as e:  # a required field missing, or a value of the wrong type
        raise ResreproError(f"the run configuration is not usable: {e}") from None


def is_added_default(added: dict[str, Any], key: str, value: Any) -> bool:
    return key in added and added[key] == value
