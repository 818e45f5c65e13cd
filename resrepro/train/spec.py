"""``RunSpec``: the one description of a training run, written to ``config.json`` in its run directory."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from resrepro.errors import ResreproError

# Fields that say where or how fast a run is computed, not what it computes: a run may be resumed with
# other values for these, and they do not enter the config hash.
RUNTIME_FIELDS = ("data_dir", "device", "compile", "eval_batch_size", "checkpoint_every", "tensorboard")


@dataclass(frozen=True)
class RunSpec:
    """A CIFAR-style training run. Defaults are the paper's CIFAR-10 recipe (§4.2)."""

    model: str = "resnet20"  # a registry name (see `resrepro models`)
    dataset: str = "cifar10"  # cifar10 | digits | synthetic
    seed: int = 0
    iters: int = 64_000
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (32_000, 48_000)
    lr_decay: float = 0.1
    # ResNet-110 (§4.2): lr 0.01 until training error < 80%, then back to lr. None: on for n >= 18.
    warmup: bool | None = None
    warmup_lr: float = 0.01
    warmup_until_error: float = 0.8
    augment: bool = True  # pad 4, random 32×32 crop, random horizontal flip
    pad: int = 4
    normalize: str = "pixel-mean"  # the paper's per-pixel mean subtraction; or "mean-std"
    val_split: int = 0  # hold out this many training images and evaluate on them instead of the test set
    width: int = 16  # first-stage filters (16 in the paper; the tiny scale narrows it)
    eval_every: int = 1_000
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    grad_checkpoint: bool = False
    # Runtime (see RUNTIME_FIELDS)
    data_dir: str | None = None
    device: str = "auto"
    compile: bool | None = None  # None: on for CUDA
    eval_batch_size: int = 1_000
    checkpoint_every: int = 1_000
    tensorboard: bool = False
    verify: bool = field(default=True)

    def __post_init__(self) -> None:
        # Lists from JSON/TOML become tuples so specs stay hashable and comparable.
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        check(self)

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ResreproError(f"unknown run setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """What the run computes: the spec without its runtime fields."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS + ("verify",)}

    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def n(self) -> int | None:
        from resrepro.models.registry import resolve

        return resolve(self.model).n

    @property
    def uses_warmup(self) -> bool:
        return self.warmup if self.warmup is not None else (self.n or 0) >= 18


def check(spec: RunSpec) -> None:
    """Raise a ResreproError for a spec that cannot run, naming the setting."""
    from resrepro.models.registry import resolve

    model = resolve(spec.model)
    if model.family != "cifar":
        raise ResreproError(f"{spec.model} is an ImageNet net; use `resrepro train imagenet`")
    if spec.dataset not in ("cifar10", "digits", "synthetic"):
        raise ResreproError(f"unknown dataset {spec.dataset!r}: choose cifar10, digits or synthetic")
    if spec.normalize not in ("pixel-mean", "mean-std"):
        raise ResreproError(f"unknown normalisation {spec.normalize!r}: choose pixel-mean or mean-std")
    if spec.precision not in ("auto", "bf16", "fp32"):
        raise ResreproError(f"unknown precision {spec.precision!r}: choose auto, bf16 or fp32")
    for name in ("iters", "batch_size", "eval_every", "width", "eval_batch_size", "checkpoint_every"):
        if getattr(spec, name) < 1:
            raise ResreproError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(spec, name)}")
    if list(spec.milestones) != sorted(spec.milestones):
        raise ResreproError(f"milestones must be increasing, got {list(spec.milestones)}")
    if spec.lr <= 0 or spec.val_split < 0:
        raise ResreproError("lr must be positive and val-split non-negative")


def runtime_fields(config: dict[str, Any]) -> frozenset[str]:
    """The keys of a run's ``config.json`` that say where or how fast it ran, for the run's own family
    (``family`` missing: a CIFAR run written before families were recorded)."""
    from resrepro.train import imagenet_spec

    family = config.get("family", "cifar")
    return frozenset(imagenet_spec.RUNTIME_FIELDS if family == "imagenet" else RUNTIME_FIELDS + ("verify",))
