"""One door to every architecture: names like ``resnet110``, ``plain56``, ``resnet34-A``, ``resnet50-v1.5``.

A name is ``[cifar-|imagenet-]{resnet|plain}{depth}[-A|-B|-C][-v1.5]``, or ``vgg16`` (the ImageNet net the paper
compares with in Table 3 and replaces in Tables 7/8; ``vgg16-bn`` is a deviation for the tiny scale). Depths
18/34/50/101/152 are the ImageNet nets of Table 1; any other depth 6n+2 is a CIFAR net of §4.2
(``cifar-resnet50`` for the CIFAR net of n=8). CIFAR nets default to option A (the paper's CIFAR choice),
ImageNet nets to option B (the paper's choice for 50/101/152 and Tables 3-5); name ``-A`` for Table 2's 18/34.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from resrepro.errors import ResreproError
from resrepro.models.stages import IMAGENET_LAYERS

if TYPE_CHECKING:
    from torch import nn

# Names and depths are plain data, without torch (imported when a net is built): the CLI checks a model name or
# depth in a fraction of a second, before the seconds that importing torch takes.
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)  # Table 6 and Fig. 6
IMAGENET_DEPTHS = tuple(IMAGENET_LAYERS)  # Table 1
# Five times ResNet-1202's n (200): 97M parameters, built in seconds. Beyond it a mistyped --n (an extra digit
# or ten) would sit building a model that cannot train, with no message.
MAX_N = 1000

# The paper's own figures: Table 6 parameter counts (CIFAR residual nets, as printed) and Table 1 FLOPs
# (multiply-adds, the same for plain and residual nets of one depth).
PAPER_PARAMS = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6, 1202: 19.4e6}
PAPER_MACS = {18: 1.8e9, 34: 3.6e9, 50: 3.8e9, 101: 7.6e9, 152: 11.3e9}
VGG16_PAPER_MACS = 15.3e9  # §4.1: "VGG-16/19 nets (15.3/19.6 billion FLOPs)"

_NAME = re.compile(
    r"^(?:(?P<family>cifar|imagenet)-)?(?P<kind>resnet|plain)(?P<depth>\d+)"
    r"(?:-(?P<shortcut>[abc]))?(?P<v15>-v1\.5)?$"
)


class UnknownModelError(ResreproError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build one architecture; ``name`` is its canonical registry name."""

    name: str
    family: str  # "cifar" or "imagenet"
    depth: int
    plain: bool = False
    shortcut: str = "A"
    stride_in_1x1: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict, compare=False)
    arch: str = "resnet"  # "resnet" (plain or residual, Table 1 / §4.2) or "vgg"

    @property
    def n(self) -> int | None:
        return (self.depth - 2) // 6 if self.family == "cifar" else None

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, 32, 32) if self.family == "cifar" else (3, 224, 224)

    @property
    def paper_params(self) -> float | None:
        if self.family == "cifar" and not self.plain and self.shortcut == "A":
            return PAPER_PARAMS.get(self.depth)
        return None

    @property
    def paper_macs(self) -> float | None:
        if self.arch == "vgg":
            return VGG16_PAPER_MACS
        return PAPER_MACS.get(self.depth) if self.family == "imagenet" else None

    def build(self, **overrides: Any) -> nn.Module:
        from resrepro.models.cifar import CifarResNet
        from resrepro.models.imagenet import ImageNetResNet

        kw = {**self.kwargs, **overrides}
        if self.arch == "vgg":
            from resrepro.models.vgg import VGG16

            return VGG16(**kw)
        if self.family == "cifar":
            return CifarResNet(self.n, plain=self.plain, shortcut=self.shortcut, **kw)
        return ImageNetResNet(
            self.depth, plain=self.plain, shortcut=self.shortcut, stride_in_1x1=self.stride_in_1x1, **kw
        )


def model_name(family: str, depth: int, plain: bool = False, shortcut: str | None = None,
               stride_in_1x1: bool = True) -> str:
    """The canonical name of an architecture (the inverse of :func:`resolve`)."""
    default = "A" if family == "cifar" else "B"
    ambiguous = family == "cifar" and depth in IMAGENET_DEPTHS
    name = ("cifar-" if ambiguous else "") + ("plain" if plain else "resnet") + str(depth)
    if not plain and shortcut and shortcut != default:
        name += f"-{shortcut}"
    if family == "imagenet" and not stride_in_1x1:
        name += "-v1.5"
    return name


def cifar_spec(n: int, *, plain: bool = False, shortcut: str = "A") -> ModelSpec:
    """The CIFAR net of depth 6n+2 (1 <= n <= MAX_N)."""
    if not 1 <= n <= MAX_N:
        raise UnknownModelError(f"n must be at least 1 and at most {MAX_N} (depth 6n+2: 8..{6 * MAX_N + 2}), "
                                f"got {n}")
    if shortcut not in "ABC" or len(shortcut) != 1:
        raise ResreproError(f"unknown shortcut option {shortcut!r}: choose A, B or C")
    depth = 6 * n + 2
    return ModelSpec(model_name("cifar", depth, plain, shortcut), "cifar", depth, plain, shortcut)


def resolve(name: str) -> ModelSpec:
    """Parse a model name into a :class:`ModelSpec`, or raise :class:`UnknownModelError` saying why."""
    if name.strip().lower() in ("vgg16", "imagenet-vgg16"):
        return VGG16_SPEC
    if name.strip().lower() in ("vgg16-bn", "imagenet-vgg16-bn"):
        return VGG16_BN_SPEC
    m = _NAME.match(name.strip().lower())
    if not m:
        hint = difflib.get_close_matches(name, [s.name for s in list_models()], n=3)
        also = f" Did you mean {', '.join(hint)}?" if hint else ""
        raise UnknownModelError(
            f"unknown model {name!r}: expected e.g. resnet20, plain56, resnet34-A, resnet50-v1.5, vgg16 "
            f"(see `resrepro models`).{also}"
        )
    depth, plain = int(m["depth"]), m["kind"] == "plain"
    family = m["family"] or ("imagenet" if depth in IMAGENET_DEPTHS else "cifar")
    shortcut = (m["shortcut"] or ("A" if family == "cifar" else "B")).upper()
    if plain and m["shortcut"]:
        raise UnknownModelError(f"{name!r}: a plain net has no shortcuts, so no option {shortcut}")
    if family == "imagenet":
        if depth not in IMAGENET_DEPTHS:
            raise UnknownModelError(f"{name!r}: ImageNet depths are {', '.join(map(str, IMAGENET_DEPTHS))}")
        stride_in_1x1 = not m["v15"]
        return ModelSpec(model_name(family, depth, plain, shortcut, stride_in_1x1), family, depth, plain,
                         shortcut, stride_in_1x1)
    if m["v15"]:
        raise UnknownModelError(f"{name!r}: -v1.5 is a bottleneck stride choice; CIFAR nets have none")
    if depth < 8 or (depth - 2) % 6:
        raise UnknownModelError(f"{name!r}: a CIFAR net has depth 6n+2 with n >= 1 (8, 14, 20, 26, ...)")
    return cifar_spec((depth - 2) // 6, plain=plain, shortcut=shortcut)


@functools.cache
def canonical_model(name: str) -> str:
    """The registry's canonical name (``resnet34-B`` -> ``resnet34``), so spellings of one net group together.

    Names the registry does not know (another tool's runs) are kept as written.
    """
    try:
        return resolve(name).name
    except UnknownModelError:
        return name


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the named architecture; ``overrides`` go to the constructor (``num_classes``, ``width``...)."""
    return resolve(name).build(**overrides)


def list_models(family: str | None = None, *, deviations: bool = False) -> list[ModelSpec]:
    """The architectures of the paper's tables and figures, in the paper's order; ``deviations`` adds the
    registered nets the paper has not (vgg16-bn)."""
    if family not in (None, "cifar", "imagenet"):
        raise ResreproError(f"unknown family {family!r}: choose cifar or imagenet")
    specs: list[ModelSpec] = []
    if family in (None, "cifar"):
        for d in CIFAR_DEPTHS[:-1]:
            specs += [resolve(f"plain{d}")] + [resolve(f"resnet{d}-{s}") for s in "ABC"]
        specs.append(resolve("resnet1202"))  # the paper trains only this variant at 1202 layers
    if family in (None, "imagenet"):
        for d in IMAGENET_DEPTHS:
            if d in (18, 34):
                specs.append(resolve(f"plain{d}"))
            specs += [resolve(f"resnet{d}-{s}") for s in "ABC"]
            if d >= 50:
                specs.append(resolve(f"resnet{d}-v1.5"))
        specs += [VGG16_SPEC] + ([VGG16_BN_SPEC] if deviations else [])
    return specs


# No shortcuts (plain); 13 convs + 3 FC layers. vgg16-bn (BN after each conv) is a deviation for the tiny scale,
# left out of list_models unless asked for (`resrepro models` lists it): the paper has no such net.
VGG16_SPEC = ModelSpec("vgg16", "imagenet", 16, plain=True, arch="vgg")
VGG16_BN_SPEC = ModelSpec("vgg16-bn", "imagenet", 16, plain=True, kwargs={"batch_norm": True}, arch="vgg")
