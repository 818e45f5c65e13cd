"""Training curves for the figures: the logged metrics of runs, one setting per model, the mean over seeds.

Runs are found by :func:`resrepro.analysis.aggregate.find_runs`; this module adds what only curves need.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from resrepro.analysis.aggregate import Run
from resrepro.errors import ResreproError
from resrepro.train.rundir import METRICS
from resrepro.train.spec import runtime_fields

# Fields that differ between the seeds of one experiment, or only say where/how fast it ran.
_NOT_SETTING = {"seed", "config_hash", "family"}
CURVE_COLUMNS = ("epoch", "lr", "train_loss", "train_error", "eval_loss", "eval_error")


@dataclass
class Curve:
    """The mean over the seeds of one model: CURVE_COLUMNS indexed by iteration."""

    model: str
    runs: list[Run]
    data: pd.DataFrame
    eval_split: str  # "test", or "val" when the runs held out a validation set


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


def setting(run: Run) -> str:
    """The run's config without its seed and runtime fields: runs with equal settings are seeds of one."""
    kept = {k: v for k, v in run.config.items() if k not in _NOT_SETTING | runtime_fields(run.config)}
    return json.dumps(kept, sort_keys=True, default=str)


def choose_dataset(runs: list[Run], models: list[str], preferred: str, dataset: str | None
                   ) -> tuple[str, list[str]]:
    """The dataset to show: the one asked for, else ``preferred`` if it has runs, else the most common one."""
    if dataset is not None:
        return dataset, []
    counts = Counter(r.dataset for r in runs if r.model in models)
    if not counts or preferred in counts:
        return preferred, []
    chosen = counts.most_common(1)[0][0]
    return chosen, [f"no {preferred} runs: showing {chosen} runs (choose with --dataset)"]


def select(runs: list[Run], model: str, dataset: str) -> tuple[list[Run], list[str]]:
    """The seeds of one setting of ``model`` on ``dataset``; the longest-trained setting if there are several
    (a full-scale sweep beside a tiny one), with a warning naming what was left out."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        if r.model == model and r.dataset == dataset:
            groups.setdefault(setting(r), []).append(r)
    if not groups:
        return [], []
    ranked = sorted(groups.values(), key=lambda g: (int(g[0].config.get("iters") or 0), len(g)), reverse=True)
    chosen = sorted(ranked[0], key=lambda r: (str(r.config.get("seed")), str(r.path)))
    warnings = []
    if len(ranked) > 1:
        others = sum(map(len, ranked[1:]))
        iters = chosen[0].config.get("iters")
        warnings.append(f"{model}: runs with {len(ranked)} different settings; showing the one with {iters} "
                        f"iterations ({len(chosen)} run(s)), not {others} other(s)")
    return chosen, warnings


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
    if not frames:
        return None, warnings
    common = frames[0].index
    for f in frames[1:]:
        common = common.intersection(f.index)
    cols = [c for c in CURVE_COLUMNS if all(c in f.columns for f in frames)]
    stacked = pd.concat([f.loc[common, cols].apply(pd.to_numeric, errors="coerce") for f in frames])
    splits = {s for f in frames for s in f.get("eval_split", pd.Series(dtype=str)).dropna()}
    mean = stacked.groupby(level=0).mean().sort_index()
    return Curve(model, used, mean, "val" if "val" in splits else "test"), warnings
