"""The files resrepro ships beside its code, the experiments and the paper's tables, found alike from a
checkout and from an installed wheel."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

# Where a reader of the repository finds each folder. A wheel has no repository around it, so pyproject.toml
# maps each folder into the package as resrepro/_shipped/<name>.
IN_CHECKOUT = {"experiments": ("experiments",), "paper": ("results", "paper")}


def shipped_folder(name: str) -> Traversable:
    """The shipped folder ``name`` ("experiments" or "paper"): in the installed package, else in the checkout."""
    installed = files("resrepro") / "_shipped" / name
    if installed.is_dir():
        return installed
    # An editable install and a checkout on PYTHONPATH import resrepro/ from the repository, folders beside it.
    return Path(__file__).resolve().parents[1].joinpath(*IN_CHECKOUT[name])
