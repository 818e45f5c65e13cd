"""resrepro.io: atomic writes keep an ordinary write's permissions; stale temp files of killed writes go."""

import os
import stat

import pytest

from resrepro.io import atomic_write, remove_stale_temps, write_json, write_text


@pytest.fixture
def umask():
    """Set the process umask for one test, and restore it after."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_of_an_ordinary_write(tmp_path, umask, mask, mode):
    umask(mask)
    with open(tmp_path / "ordinary.txt", "w") as f:
        f.write("x")
    write_text(tmp_path / "atomic.txt", "x")
    write_json(tmp_path / "sub" / "atomic.json", {"a": 1})
    assert stat.S_IMODE((tmp_path / "ordinary.txt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "sub" / "atomic.json").stat().st_mode) == mode


def test_a_rewrite_follows_the_umask_of_the_writer(tmp_path, umask):
    umask(0o077)
    write_text(tmp_path / "f", "private")
    umask(0o022)
    write_text(tmp_path / "f", "shared")
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644 and (tmp_path / "f").read_text() == "shared"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    write_text(tmp_path / "f", "old")

    def disk_full(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(tmp_path / "f", disk_full)
    assert (tmp_path / "f").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_stale_temps_of_the_named_files_are_removed_and_nothing_else(tmp_path):
    names = [".checkpoint.pt.k2j4h1.tmp", ".metrics.csv.abc.tmp", ".curves.png.x1.tmp", "checkpoint.pt", ".lock",
             "notes.tmp"]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temps(tmp_path, ("checkpoint.pt", "metrics.csv", "summary.json"))
    assert sorted(p.name for p in removed) == [".checkpoint.pt.k2j4h1.tmp", ".metrics.csv.abc.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".curves.png.x1.tmp", ".lock", "checkpoint.pt",
                                                           "notes.tmp"]
