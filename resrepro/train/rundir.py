"""The run directory: the only interface between training and reporting.

    config.json    the run's spec (``RunSpec.to_dict()``, ``family`` included) plus ``config_hash``
    metrics.csv    one row per evaluation: METRIC_COLUMNS (errors are fractions, 0..1)
    summary.json   written when the run finishes: final errors, speed, provenance
    checkpoint.pt  the latest checkpoint (model, optimizer, schedule, RNG and data-order state)
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resrepro.errors import ResreproError
from resrepro.io import write_json, write_text

if TYPE_CHECKING:
    from resrepro.train.spec import RunSpec

CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.json", "metrics.csv", "summary.json", "checkpoint.pt"
METRIC_COLUMNS = (
    "iter", "epoch", "lr", "train_loss", "train_error", "eval_split", "eval_loss", "eval_error",
    "images_per_s", "wall_s",
)


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

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
        """What the directory holds, for a run of ``spec`` about to use it: ``"this"`` (this configuration, to
        resume or skip), ``"free"`` (nothing; or only the config.json of a run that never started, which has
        nothing to lose), ``"other"`` (another run that has started) or ``"foreign"`` (files that are no run).

        The one answer the trainer and the sweep plan both act on. Hashes are recomputed from config.json, not
        read: a run written before a setting existed ran with that setting's default."""
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
        """Whether the directory holds this run already; raise, touching nothing, if it holds another."""
        held = self.holding(spec)
        if held == "other":
            raise ResreproError(f"{self.path} holds a different run ({self._difference(spec)}); choose another "
                                "--out directory (nothing was overwritten)")
        if held == "foreign":
            raise ResreproError(f"{self.path} is not empty and is not a resrepro run; choose another --out")
        return held == "this"

    def _difference(self, spec: RunSpec) -> str:
        try:
            there = self.read_spec().identity()
        except ResreproError as e:
            return str(e)
        mine = spec.identity()
        return ", ".join(f"{k}: {there.get(k)!r} there, {mine.get(k)!r} now"
                         for k in sorted(set(there) | set(mine)) if there.get(k) != mine.get(k))

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
        p = self.path / METRICS
        if not p.exists():
            return []
        with p.open(newline="") as f:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite the whole (small) file atomically, so it always agrees with the last checkpoint."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: _format(row.get(k)) for k in METRIC_COLUMNS})
        write_text(self.path / METRICS, buf.getvalue())


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
