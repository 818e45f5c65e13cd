"""The paper's numbers as data: ``results/paper/*.csv`` (one tidy file per table) loaded into pandas; and the
shape of its claims, which the experiment files state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from resrepro.errors import ResreproError
from resrepro.shipped import shipped_folder

if TYPE_CHECKING:  # pandas is imported when a table is read: experiment files (and their claims) need none of it
    import pandas as pd


def paper_tables() -> list[str]:
    """Names of the paper's tables (``table6``, ``table1_flops``, ``calibration``, ...)."""
    return sorted(p.name.removesuffix(".csv") for p in shipped_folder("paper").iterdir() if p.name.endswith(".csv"))


def paper_table(name: str) -> pd.DataFrame:
    """One of the paper's tables; errors in percent as the paper prints them, NaN where it prints none."""
    import pandas as pd

    path = shipped_folder("paper") / f"{name}.csv"
    if not path.is_file():
        raise ResreproError(f"unknown paper table {name!r}; known: {', '.join(paper_tables())}")
    with path.open("rb") as f:
        # `model` and `label` stay strings even when a column happens to look numeric.
        return pd.read_csv(f, dtype={"model": str, "label": str, "source": str})


CLAIM_OPS = ("<", "<=", ">", ">=")


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims as data, from an experiment file's ``[[claims]]`` (see resrepro.experiments).

    ``compare``: the median of ``metric`` over ``left``'s runs stands in ``op`` to ``right``'s (several nets: the
    best of them), by at least ``margin``; ``within``: ``left``'s median lies in ``[low, high]``.
    """

    id: str  # short, unique in its file: "degradation"
    says: str  # the claim in the paper's words
    metric: str  # a runs_frame column in percent: eval_error, train_eval_error, ten_crop_top1, voc07_map, ...
    left: str
    op: str = ""  # compare only: one of CLAIM_OPS
    right: tuple[str, ...] = ()  # compare only: one net, or several whose best counts
    low: float | None = None  # within only
    high: float | None = None
    margin: float = 0.0  # at this scale: how far left must clear right (negative: a tolerance)
    seeds: int = 1  # at this scale: the runs each net needs before a verdict

    @property
    def models(self) -> tuple[str, ...]:
        return (self.left, *self.right)
