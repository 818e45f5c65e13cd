"""Run directories -> pandas: one row per run, and mean ± std over seeds per model.

A runs directory is any folder; every directory below it holding a ``config.json`` is a run. Folders that are
not resrepro runs, or are damaged, are skipped with a warning (returned, never printed), so that one bad
folder never hides the others from a report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from resrepro.errors import ResreproError
from resrepro.models.registry import canonical_model
from resrepro.train.rundir import CHECKPOINT, CONFIG, METRICS, SUMMARY, RunDir
from resrepro.train.spec import spec_from_config

REQUIRED_KEYS = ("model", "dataset")
INT_KEYS = ("seed", "iters", "width")
ERROR_KEYS = ("train_error", "eval_error", "train_eval_error")  # fractions in summary.json, % in frames
COLUMNS = (
    "path", "model", "dataset", "seed", "iters", "width", "config_hash", "setting", "finished", "iter",
    "eval_split",
    "train_error", "train_loss", "eval_error", "eval_loss", "train_eval_error", "wall_s", "images_per_s",
    "params",
)


@dataclass(frozen=True)
class Run:
    """One run directory as read from disk; ``summary`` is None until the run has finished."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None = None
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # protocol -> eval/<protocol>.json

    @property
    def model(self) -> str:
        return canonical_model(str(self.config["model"]))

    @property
    def dataset(self) -> str:
        return str(self.config["dataset"])

    @property
    def finished(self) -> bool:
        return self.summary is not None and self.summary.get("status") == "finished"

    @property
    def eval_split(self) -> str | None:
        """The split of the final evaluation (``test``, or ``val`` when held out); None until finished."""
        final = self.summary.get("final") if self.summary is not None and self.finished else None
        return final.get("eval_split") if isinstance(final, dict) else None


def setting(config: dict[str, Any]) -> str:
    """What the seeds of one experiment share: the config without its seed, its config_hash and the runtime
    fields of its family (where or how fast it ran), the model by its canonical name (``resnet20-A`` and
    ``resnet20`` are one net). Runs with equal settings are seeds of one experiment."""
    try:
        # What the run computes, as its config hash reads it: a field added since (zero_pad, bn_group) at what
        # earlier runs computed is the same experiment as its absence.
        kept = spec_from_config(config).identity()
    except ResreproError:  # a family this resrepro does not train, or a damaged config: every field may count
        kept = dict(config)
    kept = {k: v for k, v in kept.items() if k not in {"seed", "config_hash"}}
    # Runs written before families were recorded are CIFAR runs, the same experiments as those written after.
    kept |= {"model": canonical_model(str(config.get("model"))), "family": config.get("family", "cifar")}
    return json.dumps(kept, sort_keys=True, default=str)


def find_runs(root: str | Path) -> tuple[list[Run], list[str]]:
    """Every run below ``root`` (``root`` itself may be one), and a warning for each folder skipped."""
    root = Path(root)
    if not root.is_dir():
        raise ResreproError(f"runs directory {root} {'is a file' if root.exists() else 'does not exist'}: pass "
                            "the folder holding your runs")
    runs: list[Run] = []
    warnings: list[str] = []
    configs = sorted(root.rglob(CONFIG))
    for config_path in configs:
        run, problems = _read_run(config_path.parent)
        if run is None:
            warnings.append(f"skipped {config_path.parent}: {problems[0]}")
        else:
            runs.append(run)
            warnings += [f"{config_path.parent}: {p}" for p in problems]
    # A run whose config.json was lost still has its other files: it is damaged, not absent.
    found = {p.parent for p in configs}
    for path in sorted({p.parent for name in (SUMMARY, METRICS, CHECKPOINT) for p in root.rglob(name)} - found):
        there = ", ".join(n for n in (SUMMARY, METRICS, CHECKPOINT) if (path / n).exists())
        warnings.append(f"skipped {path}: it holds {there} but no {CONFIG}: the run directory is damaged (restore "
                        f"its {CONFIG} to count it)")
    return runs, warnings


def _read_run(path: Path) -> tuple[Run | None, list[str]]:
    """(run, minor problems) or (None, [why the folder was skipped])."""
    rundir = RunDir(path)
    try:
        config = rundir.read_config()
        summary = rundir.read_summary()
    except (ResreproError, OSError) as e:  # OSError: unreadable (permissions, a folder named config.json)
        return None, [str(e)]
    # Other tools write config.json too, some with "model"/"dataset" sections: a run names both as strings.
    if not isinstance(config, dict) or not all(isinstance(config.get(k), str) for k in REQUIRED_KEYS):
        return None, ["config.json names no model and dataset: not a resrepro run"]
    for key in INT_KEYS:  # a report groups and sorts by them: a damaged value must not pass as a setting
        if key in config and (not isinstance(config[key], int) or isinstance(config[key], bool)):
            return None, [f"config.json: {key} should be an integer, got {config[key]!r}: the run directory is "
                          "damaged"]
    if not isinstance(summary, (dict, type(None))):
        return None, ["summary.json is not a JSON object: the run directory is damaged"]
    if summary is not None and summary.get("status") == "finished":
        final = summary.get("final")
        if not isinstance(final, dict) or "eval_error" not in final:
            return None, ["summary.json says finished but has no final eval_error: the run is damaged"]
    evals, problems = {}, []
    for p in sorted((path / "eval").glob("*.json")):
        try:
            ev = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            ev = None
            problems.append(f"ignored eval/{p.name}: not valid JSON ({e})")
        if isinstance(ev, dict):
            evals[p.stem] = ev
    return Run(path, config, summary, evals), problems


def runs_frame(root: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per run (finished or not) with final errors in percent, and the warnings of :func:`find_runs`.

    ImageNet runs evaluated with ``resrepro eval`` add ``center_top1``, ``ten_crop_top5``, ... columns.
    """
    runs, warnings = find_runs(root)
    return frame_of(runs), warnings


def frame_of(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run, the columns of :func:`runs_frame`."""
    return pd.DataFrame([_row(r) for r in runs], columns=_columns(runs))


def _columns(runs: Sequence[Run]) -> list[str]:
    """COLUMNS, then each kept evaluation's columns (``<protocol>_top1``, ``voc07_map``, ...)."""
    protocols = sorted({p for r in runs for p in r.evals}, key=_protocol_order)
    return [*COLUMNS, *(f"{_col(p)}_{suffix}" for p in protocols for suffix, _ in _eval_columns(p))]


def _protocol_order(protocol: str) -> tuple[int, str]:
    """Protocols in the order their families were registered (ImageNet's before detection's), unknown ones last."""
    from resrepro.train.families import families

    ranks = [i for i, f in enumerate(families()) if f.keeps_eval and protocol in f.protocols]
    return (ranks[0] if ranks else len(families()), protocol)


def _eval_columns(protocol: str) -> tuple[tuple[str, str], ...]:
    """The columns of one kept result: (column suffix, result key); top-1/top-5 for an unknown protocol."""
    from resrepro.train.families import family_of_protocol
    from resrepro.train.recipe import Family

    family = family_of_protocol(protocol)
    return family.eval_columns if family is not None else Family.eval_columns


def _col(protocol: str) -> str:
    return protocol.replace("-", "_")


def _row(run: Run) -> dict[str, Any]:
    c, s = run.config, run.summary or {}
    final = s.get("final", {}) if run.finished else {}
    row: dict[str, Any] = {
        "path": str(run.path), "model": run.model, "dataset": run.dataset, "seed": c.get("seed"),
        "iters": c.get("iters"), "width": c.get("width"), "config_hash": c.get("config_hash"),
        "setting": setting(c),
        "finished": run.finished, "iter": s.get("iter") if run.finished else _last_iter(run.path),
        "eval_split": run.eval_split, "train_loss": final.get("train_loss"),
        "eval_loss": final.get("eval_loss"), "wall_s": s.get("wall_s"), "images_per_s": s.get("images_per_s"),
        "params": s.get("params"),
    }
    for k in ERROR_KEYS:
        row[k] = _percent(final.get(k))
    for protocol, ev in run.evals.items():
        for suffix, key in _eval_columns(protocol):
            row[f"{_col(protocol)}_{suffix}"] = _percent(ev.get(key))
    return row


def _percent(fraction: Any) -> float | None:
    # run directories store fractions (0..1); the paper and every report print percent
    return None if fraction is None else 100.0 * float(fraction)


def _last_iter(path: Path) -> int | None:
    """How far an unfinished run got, from its metrics.csv (None if it has none or it cannot be read)."""
    try:
        rows = RunDir(path).read_metrics()
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return rows[-1].get("iter") if rows else None


def summarise(df: pd.DataFrame, by: Sequence[str] = ("model", "dataset"),
              value: str = "eval_error", best: str = "min") -> pd.DataFrame:
    """Per group of finished runs: ``mean``, ``std`` (ddof=1, NaN for one run), ``best`` (min; "max" for a
    score such as mAP) and ``n``.

    Runs without ``value`` (an ImageNet run not yet evaluated with that protocol) are not counted.
    """
    by = list(by)
    if value not in df.columns:
        df = df.assign(**{value: float("nan")})
    done = df[df["finished"].astype(bool) & df[value].notna()]
    if done.empty:
        return pd.DataFrame(columns=[*by, "mean", "std", "best", "n"])
    grouped = done.groupby(by, dropna=False, sort=True)[value]
    return grouped.agg(mean="mean", std="std", best=best, n="count").reset_index()


def finished_only(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The finished runs of ``df`` (the only ones with results), and a warning naming each unfinished one."""
    finished = df["finished"].astype(bool)
    warnings = []
    for r in df[~finished].itertuples():
        at = "" if pd.isna(r.iter) else f", at iteration {int(r.iter):,}"
        warnings.append(f"unfinished, not counted: {r.path} ({r.model}{at})")
    return df[finished], warnings
