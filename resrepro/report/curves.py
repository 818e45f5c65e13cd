"""Training curves for the figures: the logged metrics of runs, the mean over the seeds of one setting.

Which runs form a curve is decided by :func:`resrepro.analysis.selection.select_runs`, as for the tables;
this module adds what only curves need.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from resrepro.analysis.aggregate import Run
from resrepro.errors import ResreproError
from resrepro.train.rundir import METRICS

CURVE_COLUMNS = ("epoch", "lr", "train_loss", "train_error", "eval_loss", "eval_error")


@dataclass
class Curve:
    """The mean over the seeds of one model: CURVE_COLUMNS indexed by iteration."""

    model: str
    runs: list[Run]
    data: pd.DataFrame
    eval_split: str  # "test", or "val" when the runs held out a validation set
    low: pd.DataFrame | None = None  # the lowest and highest seed at each iteration (None for one run)
    high: pd.DataFrame | None = None

    def lr_drops(self) -> list[int]:
        """The iterations where the learning rate is divided: the runs' milestones where their config names them
        (CIFAR), else where the logged lr falls (ImageNet's drops on a plateau)."""
        stones = {int(m) for r in self.runs for m in (r.config.get("milestones") or []) if isinstance(m, int)}
        if stones:
            return sorted(m for m in stones if m <= (int(self.data.index.max()) if len(self.data) else 0))
        lr = pd.to_numeric(self.data.get("lr", pd.Series(dtype=float)), errors="coerce").dropna()
        return [int(i) for i, before, now in zip(lr.index[1:], lr.iloc[:-1], lr.iloc[1:], strict=True)
                if now < 0.5 * before]


def read_metrics(path: str | Path) -> pd.DataFrame:
    """A run's metrics.csv indexed by iteration, or a ResreproError saying why it cannot be used."""
    p = Path(path) / METRICS
    try:
        metrics = pd.read_csv(p)
    except FileNotFoundError:
        raise ResreproError(f"{Path(path)} has no {METRICS} yet: has the run started?") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ResreproError(f"{p} is unreadable ({e})") from None
    missing = {"iter", "train_error", "eval_error"} - set(metrics.columns)
    if missing:
        raise ResreproError(f"{p} lacks column(s) {', '.join(sorted(missing))}: not a resrepro metrics file")
    # A resumed run rewrites its file, but keep the last row of an iteration should one repeat.
    metrics = metrics.dropna(subset=["iter"]).drop_duplicates("iter", keep="last")
    return metrics.set_index(metrics["iter"].astype(int)).drop(columns="iter").sort_index()


def mean_curve(model: str, runs: list[Run]) -> tuple[Curve | None, list[str]]:
    """Average the seeds at each iteration that all of them logged, so one curve never mixes seed sets.

    Runs whose metrics cannot be read are left out with a warning; None when none can be read.
    """
    frames, used, warnings = [], [], []
    for r in runs:
        try:
            frames.append(read_metrics(r.path))
            used.append(r)
        except ResreproError as e:
            warnings.append(f"{model}: left out {e}")
            continue
        cut = cut_short(r, frames[-1])
        if cut:
            warnings.append(f"{model}: {cut}; its curve stops there, the final numbers are summary.json's")
    if not frames:
        return None, warnings
    common = frames[0].index
    for f in frames[1:]:
        common = common.intersection(f.index)
    cols = [c for c in CURVE_COLUMNS if all(c in f.columns for f in frames)]
    stacked = pd.concat([f.loc[common, cols].apply(pd.to_numeric, errors="coerce") for f in frames])
    splits = {s for f in frames for s in f.get("eval_split", pd.Series(dtype=str)).dropna()}
    by_iter = stacked.groupby(level=0)
    spread = (by_iter.min().sort_index(), by_iter.max().sort_index()) if len(frames) > 1 else (None, None)
    return Curve(model, used, by_iter.mean().sort_index(), "val" if "val" in splits else "test", *spread), warnings


def cut_short(run: Run, metrics: pd.DataFrame) -> str | None:
    """Why a finished run's metrics are damaged, if they end before its summary.json's last iteration (a file
    cut short by a crash, a full disk or a copy); None if they reach it."""
    end = run.summary.get("iter") if run.finished else None
    last = int(metrics.index.max()) if len(metrics) else 0
    if not isinstance(end, int) or last >= end:
        return None
    return (f"{Path(run.path) / METRICS} is damaged: it ends at iteration {last:,}, but the run finished at "
            f"iteration {end:,} (summary.json)")


PAPER_UNIT = 10_000  # Fig. 1 and 6 count iterations in units of 1e4 (64k iterations: 0 to 6.4)


def x_axis(curve: Curve, epochs: bool, longest: int) -> tuple[Any, str]:
    """The x values and axis label: epochs (Fig. 4); the paper's 1e4 iterations when the longest curve spans
    at least one unit; plain iterations for a shorter run (600 iterations read as 0.00-0.06 otherwise)."""
    iters = curve.data.index.to_numpy()
    if epochs and "epoch" in curve.data and curve.data["epoch"].notna().all():
        return curve.data["epoch"].to_numpy(), "epochs"
    if epochs or longest < PAPER_UNIT:
        return iters, "iterations"
    return iters / PAPER_UNIT, "iter. (1e4)"


def longest(curves: dict[str, Curve]) -> int:
    return max((int(c.data.index.max()) for c in curves.values() if len(c.data)), default=0)


def unfinished(curve: Curve) -> bool:
    return not all(r.finished for r in curve.runs)
