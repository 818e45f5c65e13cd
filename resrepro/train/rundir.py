"""The run directory: the only interface between training and reporting.

    config.json    the RunSpec (``RunSpec.to_dict()``) plus ``config_hash``
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
from typing import Any

from resrepro.errors import ResreproError
from resrepro.io import write_json, write_text

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
