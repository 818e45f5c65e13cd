"""Images that fail to decode: the errors PIL raises for them, and the one counter every reader of image
files keeps of the images it skipped (shared memory, so DataLoader worker processes count into the main one)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import TypeVar

from PIL import Image

# What PIL raises on a file it cannot decode (UnidentifiedImageError and "image file is truncated" are
# OSErrors; some broken files raise SyntaxError or hit the decompression-bomb guard).
DECODE_ERRORS = (OSError, SyntaxError, Image.DecompressionBombError)

T = TypeVar("T")


class SkipCounter:
    """How many times an image failed to decode so far; it counts failures, so a bad file read once per epoch
    counts once per epoch."""

    def __init__(self) -> None:
        # Shared memory, so that decode failures in DataLoader worker processes reach the main process.
        self._count = multiprocessing.Value("q", 0)

    @property
    def count(self) -> int:
        return int(self._count.value)

    def decode(self, load: Callable[[], T]) -> T | None:
        """``load()``, or None, counted, if the image it reads fails to decode."""
        try:
            return load()
        except DECODE_ERRORS:
            with self._count.get_lock():
                self._count.value += 1
            return None
