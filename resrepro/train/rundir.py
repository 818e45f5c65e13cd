"""The run directory: the only interface between training and reporting.

    config.json    the run's spec (``RunSpec.to_dict()``, ``family`` included) plus ``config_hash``
    metrics.csv    one row per evaluation: METRIC_COLUMNS (errors are fractions, 0..1)
    summary.json   written when the run finishes: final errors, speed, provenance
    checkpoint.pt  the latest checkpoint (model, optimizer, schedule, RNG and data-order state)
    .lock          while a process trains the run: who it is (the OS lock on it is what keeps others out)
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import math
import os
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resrepro.errors import ResreproError
from resrepro.io import write_json, write_text

if TYPE_CHECKING:
    from resrepro.train.spec import RunSpec

CONFIG, METRICS, SUMMARY, CHECKPOINT, LOCK = "config.json", "metrics.csv", "summary.json", "checkpoint.pt", ".lock"
LOCK_PATIENCE_S = 0.25  # how long taking the lock retries: a sweep plan's probe holds it for microseconds
METRIC_COLUMNS = (
    "iter", "epoch", "lr", "train_loss", "train_error", "eval_split", "eval_loss", "eval_error",
    "images_per_s", "wall_s",
)


class RunInUse(ResreproError):
    """Another process holds the run directory's lock: it is training that run."""


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._locked = False  # this process (or its torchrun job's rank 0) holds the lock

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def read_config(self) -> dict[str, Any]:
        return _read_json(self.path / CONFIG)

    def read_summary(self) -> dict[str, Any] | None:
        p = self.path / SUMMARY
        return _read_json(p) if p.exists() else None

    def read_spec(self) -> RunSpec:
        """The spec in config.json, of its own family (a config written by an older resrepro, without a setting
        added since, gets that setting's default)."""
        from resrepro.train.spec import spec_from_config

        try:
            return spec_from_config(self.read_config())
        except ResreproError as e:
            raise ResreproError(f"{self.path / CONFIG}: {e}") from None

    def holding(self, spec: RunSpec) -> str:
        """What the directory holds, for a run of ``spec`` about to use it: ``"held"`` (another process is
        training in it, whatever run), ``"this"`` (this configuration, to resume or skip), ``"free"`` (nothing;
        or only the config.json of a run that never started, which has nothing to lose), ``"other"`` (another
        run that has started) or ``"foreign"`` (files that are no run).

        The one answer the trainer and the sweep plan both act on. Hashes are recomputed from config.json, not
        read: a run written before a setting existed ran with that setting's default."""
        if not self._locked and self.holder() is not None:
            return "held"
        if not (self.path / CONFIG).exists():
            busy = self.path.is_dir() and any(not p.name.startswith(".") for p in self.path.iterdir())
            return "foreign" if busy else "free"
        try:
            same = self.read_spec().config_hash() == spec.config_hash()
        except ResreproError:
            same = False
        if same:
            return "this"
        return "other" if self.has_started() else "free"

    def claim(self, spec: RunSpec) -> bool:
        """Whether the directory holds this run already; raise, touching nothing, if it holds another run or
        another process holds it (:class:`RunInUse`). Take :meth:`lock` first: a claim alone can be raced."""
        held = self.holding(spec)
        if held == "held":
            raise RunInUse(self._in_use())
        if held == "other":
            raise ResreproError(f"{self.path} holds a different run ({self._difference(spec)}); choose another "
                                "--out directory (nothing was overwritten)")
        if held == "foreign":
            raise ResreproError(f"{self.path} is not empty and is not a resrepro run; choose another --out")
        return held == "this"

    def _difference(self, spec: RunSpec) -> str:
        try:
            there = self.read_spec()
        except ResreproError as e:
            return str(e)
        return difference(there, spec, "there", "now")

    @contextmanager
    def lock(self, *, take: bool = True) -> Iterator[None]:
        """Hold the run directory for this process while the block runs: another process that asks gets
        :class:`RunInUse`, naming this one. The OS releases the lock on any exit, SIGKILL included; a ``.lock``
        file left by a killed process is taken over. ``take=False``: another process of this torchrun job
        (rank 0) holds it, and this one only reads.

        Our own flock rather than the filelock package: filelock truncates the lock file on each attempt, so it
        cannot say who holds a lock, and it has no probe that does not take the lock (the sweep plan's)."""
        created = take and not self.path.exists()
        try:
            fd = self._take_lock() if take else None
        except ResreproError:
            if created:  # a run that could not start leaves nothing behind
                with suppress(OSError):
                    self.path.rmdir()
            raise
        self._locked = True
        try:
            yield
        finally:
            self._locked = False
            if fd is not None:
                _release(fd, self.path / LOCK, self.path if created else None)

    def _take_lock(self) -> int:
        deadline = time.monotonic() + LOCK_PATIENCE_S
        while True:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError as e:  # a run that could not start just removed its new, empty directory
                if time.monotonic() < deadline:
                    continue
                raise ResreproError(f"cannot create {self.path / LOCK}: {e.strerror}") from None
            except OSError as e:
                raise ResreproError(f"cannot write in {self.path}: {e.strerror} — a run directory must be a "
                                    "writable folder; choose another --out") from None
            try:
                _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, self.path / LOCK)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                raise RunInUse(self._in_use()) from None
            except ResreproError:  # no locks on this file system: nobody holds this file, ours goes
                _release(fd, self.path / LOCK, None)
                raise
            # The holder before us may have removed the file between our open and our lock: ours would then
            # lock a file nobody else can see. Only a lock on the file now at the path counts.
            try:
                here, there = os.fstat(fd), os.stat(self.path / LOCK)
                same = (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
            except FileNotFoundError:
                same = False
            if same:
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, json.dumps(_whoami()).encode())
                except OSError as e:  # a full disk: not even the lock's few bytes fit
                    _release(fd, self.path / LOCK, None)
                    raise ResreproError(f"cannot write {self.path / LOCK}: {e.strerror} — free space on its disk "
                                        "or choose another --out (nothing was changed)") from None
                return fd
            os.close(fd)

    def holder(self) -> str | None:
        """Who holds the lock (pid, host, command) if another process does, else None. A probe: it takes the
        lock shared for an instant, so it creates nothing and keeps nobody out."""
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except OSError:  # no lock file (no run has ever held it), or none we may read
            return None
        try:
            _flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, self.path / LOCK)
        except BlockingIOError:
            return _describe(os.pread(fd, 4096, 0))
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def _in_use(self) -> str:
        who = self.holder() or "another process"
        return f"{self.path} is in use by {who}: wait for it to end, or stop it (nothing was changed here)"

    def has_started(self) -> bool:
        """Whether a run has left anything but its config.json: one that died before its first checkpoint
        (diverged, out of memory, killed) has nothing to lose, and its directory is free to take."""
        return any((self.path / name).exists() for name in (CHECKPOINT, METRICS, SUMMARY))

    def is_finished(self) -> bool:
        s = self.read_summary()
        return bool(s and s.get("status") == "finished")

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.path / CONFIG, config)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.path / SUMMARY, summary)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The logged rows, each with a whole-number ``iter``; a row cut short (a crash or a full disk mid-write)
        is left out. A ResreproError names the file if it is no metrics file at all (not text, no ``iter``)."""
        p = self.path / METRICS
        if not p.exists():
            return []
        try:
            with p.open(newline="") as f:
                header, *lines = list(csv.reader(f)) or [[]]
        except (UnicodeDecodeError, csv.Error) as e:
            raise ResreproError(f"{p} is damaged (not a CSV text file: {e})") from None
        if header and "iter" not in header:
            raise ResreproError(f"{p} is damaged (no iter column)")
        rows = [dict(zip(header, map(_number, line), strict=True)) for line in lines if len(line) == len(header)]
        for row in rows:
            if not isinstance(row["iter"], int) or isinstance(row["iter"], bool):
                raise ResreproError(f"{p} is damaged (iter {row['iter']!r} is not an iteration)")
        return rows

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite the whole (small) file atomically, so it always agrees with the last checkpoint."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: _format(row.get(k)) for k in METRIC_COLUMNS})
        write_text(self.path / METRICS, buf.getvalue())


def difference(a: RunSpec, b: RunSpec, a_name: str, b_name: str) -> str:
    """The settings (runtime ones aside) in which two specs differ, as "lr: 0.1 there, 0.05 now"."""
    x, y = a.identity(), b.identity()
    return ", ".join(f"{k}: {x.get(k)!r} {a_name}, {y.get(k)!r} {b_name}"
                     for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k))


def check_locks(folder: Path) -> None:
    """Refuse, in one line, a folder on a file system without file locks: a sweep asks before it starts any run,
    rather than have each fail alike. Creates the folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lock-probe-", dir=folder)
    except OSError as e:
        raise ResreproError(f"cannot write in {folder}: {e.strerror}") from None
    try:
        _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, folder)
    finally:
        os.close(fd)
        Path(probe).unlink()


def _flock(fd: int, how: int, what: Path) -> None:
    """``fcntl.flock``; a file system without locks (Lustre mounted without ``-o flock``, some NFS setups) is one
    line saying so, not a traceback. A lock that only seemed to work there would let two runs share a directory."""
    try:
        fcntl.flock(fd, how)
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK):
            raise
        raise ResreproError(f"cannot lock {what}: its file system does not support file locks "
                            f"({e.strerror}; Lustre, for one, needs to be mounted with -o flock) — ask for a mount "
                            "with locks, or put the runs (--runs, --out) on a file system that has them") from None


def _whoami() -> dict[str, Any]:
    argv = list(getattr(sys, "orig_argv", sys.argv))
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": shlex.join([Path(argv[0]).name, *argv[1:]]) if argv else ""}


def _describe(raw: bytes) -> str:
    try:
        who = json.loads(raw)
        text = f"pid {who['pid']} on {who['host']} since {who['since']}"
    except (ValueError, KeyError, TypeError):  # the holder is still writing who it is
        return "another process"
    command = str(who.get("command", ""))
    return text + (f" ({command[:160]}{'…' if len(command) > 160 else ''})" if command else "")


def _release(fd: int, lock: Path, created_dir: Path | None) -> None:
    """Remove the lock file while still holding it (see _take_lock), then unlock; remove a run directory this
    process created if nothing else is in it (a run that could not start leaves nothing behind)."""
    with suppress(OSError):  # a read-only remount mid-run: the lock is released all the same
        lock.unlink(missing_ok=True)
    os.close(fd)
    if created_dir is not None:
        with suppress(OSError):  # not empty: a run that started, or another process's lock file
            created_dir.rmdir()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResreproError(f"{path} is missing: is {path.parent} a resrepro run directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResreproError(f"{path} is not valid JSON ({e}); the run directory is damaged") from None


def _format(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _number(v: str) -> Any:
    if v == "":
        return None
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v else f
