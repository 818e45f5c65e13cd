"""The skip counter: an undecodable image is None and counted, other errors propagate."""

from __future__ import annotations

import pytest
from PIL import Image

from resrepro.data.decode import SkipCounter


def test_an_undecodable_image_is_none_and_counted(tmp_path):
    (tmp_path / "bad.JPEG").write_bytes(b"not a JPEG")
    skips = SkipCounter()
    assert skips.decode(lambda: Image.open(tmp_path / "bad.JPEG").convert("RGB")) is None
    assert skips.decode(lambda: "pixels") == "pixels" and skips.count == 1


def test_other_errors_are_not_counted_as_decode_failures():
    skips = SkipCounter()
    with pytest.raises(KeyError):
        skips.decode(lambda: {}["x"])
    assert skips.count == 0
