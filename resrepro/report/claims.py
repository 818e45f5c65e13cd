"""An artefact's claims judged on the runs it shows: its experiment file's ``[[claims]]`` at the scale those runs
were made at, written as Markdown under a table or caption and as ``<name>_claims.csv`` beside it."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from resrepro.analysis.claims import Verdict, judge
from resrepro.paper import Claim

METRIC_WORDS = {
    "train_eval_error": "training error (whole training set, eval mode)", "eval_error": "test error",
    "response_std": "mean std of the 3×3 layers' responses",
    "ten_crop_top1": "10-crop top-1 error", "ten_crop_top5": "10-crop top-5 error",
    "multi_scale_top1": "multi-scale top-1 error", "multi_scale_top5": "multi-scale top-5 error",
    "top1_error": "top-1 error", "top5_error": "top-5 error",
    "voc07_map": "VOC07 mAP", "voc12_map": "VOC12 mAP", "coco_map50": "COCO mAP@.5", "coco_map": "COCO mAP@[.5,.95]",
}


@functools.cache
def scale_of(name: str, dataset: str | None) -> str | None:
    """The scale of experiment ``name`` whose runs are on ``dataset`` (the paper's scale, full, when no runs
    say); None when the experiment is unknown or no scale trains on that dataset."""
    from resrepro.errors import ResreproError
    from resrepro.experiments import list_experiments, load_experiment

    if name not in list_experiments():
        return None
    scales = load_experiment(name).scales
    if dataset is None:
        return "full" if "full" in scales else None
    try:
        return next((s for s in scales if load_experiment(name, s).dataset == dataset), None)
    except ResreproError:
        return None


def claims_of(name: str, dataset: str | None) -> tuple[Claim, ...]:
    """The claims experiment ``name`` states at the scale of runs on ``dataset`` (none for another dataset)."""
    from resrepro.experiments import load_experiment

    scale = scale_of(name, dataset)
    return () if scale is None else load_experiment(name, scale).claims


def caveat_of(name: str, dataset: str | None) -> str:
    """Why experiment ``name`` cannot show the paper's claim at the scale of runs on ``dataset`` ("": it can)."""
    from resrepro.experiments import load_experiment

    scale = scale_of(name, dataset)
    return "" if scale is None else load_experiment(name, scale).caveat


def verdicts_for(name: str, values: pd.DataFrame, dataset: str | None) -> list[Verdict]:
    """The claims of artefact ``name`` judged on ``values`` (one row per finished run, metrics in %)."""
    return judge(claims_of(name, dataset), values)


def claim_lines(verdicts: Sequence[Verdict]) -> list[str]:
    """Markdown: each claim, the numbers it was decided on, and its verdict; nothing when there are none."""
    if not verdicts:
        return []
    lines = ["Claims of the paper, decided on the median over each net's finished runs (seeds):", ""]
    return lines + [f"- **{v.verdict}** — {line(v.claim.says, v.claim.metric, v.numbers)}" for v in verdicts]


def line(says: str, metric: str, numbers: str) -> str:
    return f"{says} ({METRIC_WORDS.get(metric, metric)}): {numbers}"


def read_verdicts(path: str | Path) -> list[str]:
    """A ``<name>_claims.csv`` as lines to print: "holds: <claim> (<metric>): <numbers>"."""
    frame = pd.read_csv(path)
    return [f"{r.verdict}: {line(r.says, r.metric, r.numbers)}" for r in frame.itertuples()]

