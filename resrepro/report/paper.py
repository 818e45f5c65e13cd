"""The paper's numbers as data: ``results/paper/*.csv`` (one tidy file per table) loaded into pandas."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from resrepro.errors import ResreproError

# The tool runs from a checkout, where results/ sits beside the package, so no package data is needed.
PAPER_DIR = Path(__file__).resolve().parents[2] / "results" / "paper"


def paper_tables() -> list[str]:
    """Names of the paper tables on disk (``table6``, ``table1_flops``, ``calibration``, ...)."""
    return sorted(p.stem for p in PAPER_DIR.glob("*.csv"))


def paper_table(name: str) -> pd.DataFrame:
    """One of the paper's tables; errors in percent as the paper prints them, NaN where it prints none."""
    path = PAPER_DIR / f"{name}.csv"
    if not path.is_file():
        known = ", ".join(paper_tables()) or f"none: {PAPER_DIR} is missing"
        raise ResreproError(f"unknown paper table {name!r}; known: {known}")
    # `model` and `label` stay strings even when a column happens to look numeric.
    return pd.read_csv(path, dtype={"model": str, "label": str, "source": str})
