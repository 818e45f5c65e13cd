"""The tiny scale's ImageFolder: scikit-learn's digits as JPEGs, written once, atomically, the same every time."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resrepro.data.imagenet import check_imagenet_dir
from resrepro.data.imagenet_digits import SIDE, digits_imagefolder
from resrepro.data.tiny import digits


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return digits_imagefolder(tmp_path_factory.mktemp("cache") / "digits-imagefolder")


def test_layout_split_and_labels_are_the_digits(folder):
    _, _, classes = check_imagenet_dir(folder)
    assert classes == [str(d) for d in range(10)]
    train, val = digits()
    for split, images in (("train", train), ("val", val)):
        files = sorted((folder / split).glob("*/*.JPEG"))
        assert len(files) == len(images)
        counts = np.bincount([int(f.parent.name) for f in files], minlength=10)
        assert counts.tolist() == np.bincount(images.labels.numpy(), minlength=10).tolist()
    with Image.open(next((folder / "val" / "3").iterdir())) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (SIDE, SIDE))


def test_a_digit_survives_the_jpeg_round_trip(folder):
    _, val = digits()
    i = 7  # val_0007.JPEG is the 8th val image, in the folder of its label
    path = folder / "val" / str(int(val.labels[i])) / f"val_{i:04d}.JPEG"
    pixels = np.asarray(Image.open(path).convert("L").resize((16, 16), Image.BILINEAR), dtype=float)
    original = val.images[i, 0].numpy().astype(float)
    assert np.corrcoef(pixels.ravel(), original.ravel())[0, 1] > 0.95


def test_an_existing_folder_is_kept_and_a_racing_build_leaves_no_debris(folder, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.JPEG")}
    assert digits_imagefolder(folder) == folder
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.JPEG")} == before

    # Another process finishes first: our rename fails, theirs stands, our temporary folder is removed.
    target = folder.parent / "raced"
    real_rename = Path.rename

    def rename(self, dest):
        Path(dest).mkdir()
        (Path(dest) / "theirs").write_text("complete")
        return real_rename(self, dest)

    monkeypatch.setattr(Path, "rename", rename)
    assert digits_imagefolder(target) == target
    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["digits-imagefolder", "raced"]
