"""The paper's numbers as data: ``results/paper/*.csv`` (one tidy file per table) loaded into pandas."""

from __future__ import annotations

import pandas as pd

from resrepro.errors import ResreproError
from resrepro.shipped import shipped_folder


def paper_tables() -> list[str]:
    """Names of the paper's tables (``table6``, ``table1_flops``, ``calibration``, ...)."""
    return sorted(p.name.removesuffix(".csv") for p in shipped_folder("paper").iterdir() if p.name.endswith(".csv"))


def paper_table(name: str) -> pd.DataFrame:
    """One of the paper's tables; errors in percent as the paper prints them, NaN where it prints none."""
    path = shipped_folder("paper") / f"{name}.csv"
    if not path.is_file():
        raise ResreproError(f"unknown paper table {name!r}; known: {', '.join(paper_tables())}")
    with path.open("rb") as f:
        # `model` and `label` stay strings even when a column happens to look numeric.
        return pd.read_csv(f, dtype={"model": str, "label": str, "source": str})
