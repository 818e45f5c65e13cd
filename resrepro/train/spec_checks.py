"""Checks of run specifications: a value against its field's type, the positive numbers, the ImageNet nets
(a depth that is not Table 1's is answered with Table 1's depths)."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from typing import Any, Literal

from resrepro.errors import ResreproError


def positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ResreproError(f"{name} must be a finite number > 0, got {value}")


def fits(value: Any, kind: Any) -> bool:
    """Whether ``value`` is of the field type ``kind`` (bool is no int here; an int is a float)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args, strict=True))
    if origin is Literal or kind is str:
        return isinstance(value, str)
    if kind is type(None):
        return value is None
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    if kind is int:  # torch keeps counts and seeds in 64 bits
        return isinstance(value, int) and -(2**63) <= value < 2**63
    if kind is float and isinstance(value, int):
        return abs(value) < 2**1023  # math.isfinite raises on an int too large for a float
    return isinstance(value, kind)


def describe_type(kind: Any) -> str:
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if typing.get_origin(kind) is tuple:
        return "a list of integers" if args[-1] is Ellipsis else f"a list of {len(args)} integers"
    return {int: "a 64-bit integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "None"}.get(kind, str(kind))


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def check_imagenet_model(name: str) -> None:
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
