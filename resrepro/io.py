"""Atomic file writes: a result or checkpoint is either the old file or the new one, never half of each, and it
ends with the permissions an ordinary write would give it."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

TEMP_SUFFIX = ".tmp"  # temp files are ".<name>.<random>.tmp" beside their target


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through ``write(fileobj)`` into a temp file beside ``path``, fsync it, then rename over ``path``.

    The file gets the mode a new file of an ordinary ``open(path, "w")`` gets, 0666 less the umask: mkstemp
    creates 0600, which would hide every run and figure from colleagues on a shared disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself must reach the disk too.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temps(directory: str | Path, names: Iterable[str]) -> list[Path]:
    """Delete the temp files that writes of ``names`` killed midway (SIGKILL, power loss) left in ``directory``;
    return them. Only while no other process writes those files: a live write's temp file looks the same."""
    stale = sorted(p for name in names for p in Path(directory).glob(f".{glob.escape(name)}.*{TEMP_SUFFIX}"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    # Linux shows the umask in /proc; elsewhere it can only be read by setting it, which for an instant
    # changes it for every thread of the process (tensorboard's writer creates files from a thread).
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def build_folder_once(root: str | Path, build: Callable[[Path], None]) -> Path:
    """``root``, built by ``build(folder)`` if it does not exist yet, and renamed into place when complete.

    A reader never sees half a folder, and two processes building it at once both end with the same
    complete folder: the loser's rename fails and its copy is removed."""
    root = Path(root).expanduser()
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        build(tmp)
        tmp.rename(root)
    except OSError:
        if not root.is_dir():  # not another process's complete folder: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
