"""The paper's claims decided on our runs: each net's median over its finished runs (seeds), and a verdict —
holds, fails, or not enough runs — with the numbers it was decided on. Tables, figures, the report page and the
tiny-scale tests all judge through :func:`judge`."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from resrepro.models.registry import canonical_model
from resrepro.paper import Claim

HOLDS, FAILS, TOO_FEW = "holds", "fails", "not enough runs"
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
VERDICT_COLUMNS = ("id", "verdict", "says", "numbers", "metric", "left", "left_median", "left_runs", "op",
                   "right", "right_median", "right_runs", "low", "high", "margin", "seeds")


def higher_is_better(metric: str) -> bool:
    """mAP is a score; every other metric we report is an error."""
    return "map" in metric


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str  # HOLDS, FAILS or TOO_FEW
    medians: dict[str, float | None]  # net as the claim names it -> median of its runs (None: no runs)
    runs: dict[str, int]  # net -> finished runs with the metric
    best: str | None = None  # compare with several nets on the right: the best of them

    @property
    def numbers(self) -> str:
        """What the verdict was decided on, as a reader checks it: "plain56 47.67 (5 runs) > plain20 0.00
        (5 runs) + 10.00"."""
        c = self.claim
        if self.verdict == TOO_FEW:
            short = [f"{m} has {self.runs[m]} finished run{'s' * (self.runs[m] != 1)} with {c.metric}, {c.seeds} "
                     "needed"
                     for m in c.models if self.runs[m] < c.seeds]
            return "; ".join(short)
        left = self._net(c.left)
        if not c.op:
            return f"{left} within [{c.low:.2f}, {c.high:.2f}]"
        right = self._net(c.right[0]) if len(c.right) == 1 else \
            f"the best of {', '.join(self._net(m) for m in c.right)}: {self.best}"
        shift = -c.margin if c.op.startswith("<") else c.margin  # the gap a claim needs, or a tolerance
        return f"{left} {c.op} {right}" + (f" {'+' if shift > 0 else '-'} {abs(shift):.2f}" if shift else "")

    def _net(self, model: str) -> str:
        runs = self.runs[model]
        return f"{model} {self.medians[model]:.2f} ({runs} run{'s' * (runs != 1)})"


def judge(claims: Sequence[Claim], values: pd.DataFrame) -> list[Verdict]:
    """Each claim decided on ``values``: one row per finished run, ``model`` (canonical) and the claims' metric
    columns in percent. A net with fewer runs than the claim's ``seeds`` leaves it undecided."""
    return [_judge(c, values) for c in claims]


def _judge(claim: Claim, values: pd.DataFrame) -> Verdict:
    # A median, not a mean: one seed stuck far off (training is chaotic) must not decide a claim about the net.
    medians, runs = {}, {}
    for model in claim.models:
        column = values[claim.metric] if claim.metric in values else pd.Series(dtype=float)
        of = pd.to_numeric(column[values["model"] == canonical_model(model)], errors="coerce").dropna() \
            if "model" in values else column
        runs[model], medians[model] = len(of), (float(of.median()) if len(of) else None)
    if any(runs[m] < claim.seeds for m in claim.models):
        return Verdict(claim, TOO_FEW, medians, runs)
    left = medians[claim.left]
    if not claim.op:
        return Verdict(claim, HOLDS if claim.low <= left <= claim.high else FAILS, medians, runs)
    pick = max if higher_is_better(claim.metric) else min
    best = pick(claim.right, key=lambda m: medians[m])
    right = medians[best] + (-claim.margin if claim.op.startswith("<") else claim.margin)
    holds = _OPS[claim.op](left, right) and math.isfinite(left)
    return Verdict(claim, HOLDS if holds else FAILS, medians, runs, best if len(claim.right) > 1 else None)


def verdict_frame(verdicts: Sequence[Verdict]) -> pd.DataFrame:
    """One row per claim, as the ``<artefact>_claims.csv`` beside a table or figure holds it."""
    rows = []
    for v in verdicts:
        c = v.claim
        right = v.best or (c.right[0] if c.right else None)
        rows.append({"id": c.id, "verdict": v.verdict, "says": c.says, "numbers": v.numbers, "metric": c.metric,
                     "left": c.left, "left_median": v.medians[c.left], "left_runs": v.runs[c.left],
                     "op": c.op or "within", "right": " ".join(c.right) or None,
                     "right_median": v.medians.get(right) if right else None,
                     "right_runs": v.runs.get(right) if right else None,
                     "low": c.low, "high": c.high, "margin": c.margin, "seeds": c.seeds})
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))
