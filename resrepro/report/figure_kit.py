"""What every figure of ours is made of: its spec and result, the paper's curve labels and colours, the
caption's missing-runs tail, and saving. Matplotlib is imported inside the functions and drives its Agg canvas
directly (no pyplot), so importing is cheap and rendering never touches a user's interactive backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from resrepro.analysis.claims import Verdict, verdict_frame
from resrepro.errors import ResreproError
from resrepro.io import atomic_write
from resrepro.models.registry import resolve
from resrepro.report.claims import claim_lines, verdicts_for
from resrepro.report.provenance import made_by, made_by_lines

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class FigureSpec:
    title: str
    dataset: str  # the paper's dataset; others (the tiny scale's) on request, or when it has no runs
    panels: tuple[tuple[str, tuple[str, ...]], ...]  # (panel title, models in legend order)
    what: str  # the caption's first sentence

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(m for _, models in self.panels for m in models))


DEPTH_COLOURS = {18: "#1f77b4", 20: "#e69f00", 32: "#17becf", 34: "#d62728", 44: "#2ca02c", 56: "#d62728",
                 110: "#222222", 1202: "#1f77b4"}


@dataclass
class FigureResult:
    figure: Figure
    caption: str  # Markdown: what is plotted, from which runs, what is missing
    warnings: list[str]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # data worth saving beside the figure
    claims: list[Verdict] = field(default_factory=list)


def judge_figure(name: str, values: pd.DataFrame, dataset: str | None) -> tuple[list[Verdict], dict[str, pd.DataFrame]]:
    """The claims of figure ``name`` decided on ``values`` (one row per finished run), and their verdicts as the
    table ``<name>_claims`` to save beside it."""
    verdicts = verdicts_for(name, values, dataset)
    return verdicts, ({f"{name}_claims": verdict_frame(verdicts)} if verdicts else {})


def check_missing(name: str, spec: FigureSpec, missing: list[str], where: Any, dataset: str | None
                  ) -> tuple[list[str], list[str]]:
    """(missing models, warnings); a ResreproError naming the runs needed when every model is missing."""
    sweep, on = f"`resrepro sweep {name}`", f" on {dataset}" if dataset else ""
    if len(missing) == len(spec.models):
        raise ResreproError(f"{name} needs runs of {', '.join(spec.models)}{on}; none found in {where}: "
                            f"train them with {sweep}")
    if not missing:
        return [], []
    return missing, [f"{name} is partial: no runs of {', '.join(missing)}{on} in {where} "
                     f"(train them with {sweep})"]


def label(model: str) -> str:
    """The paper's curve label: ``plain-20``, ``ResNet-110``."""
    spec = resolve(model)
    return f"{'plain' if spec.plain else 'ResNet'}-{spec.depth}"


def colour(model: str) -> str:
    return DEPTH_COLOURS.get(resolve(model).depth, "#7f7f7f")


def new_figure(rows: int, cols: int, size: tuple[float, float]) -> tuple[Figure, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, cols, squeeze=False)


def caption_tail(name: str, missing: list[str], warnings: list[str], claims: list[Verdict],
                 runs: list[Any]) -> list[str]:
    """The caption's end: the claims' verdicts, where the runs were made, what is missing, the warnings."""
    lines = ["", *claim_lines(claims)] if claims else []
    lines += [x for line in made_by_lines(made_by(runs)) for x in ("", line)]
    lines += ["", f"Missing: {', '.join(missing)} (train with `resrepro sweep {name}`)." if missing
             else "Missing: none."]
    return lines + (["", "Warnings:", *[f"- {w}" for w in warnings]] if warnings else [])


def save(figure: Figure, path: str | Path) -> Path:
    """Write atomically in the format the suffix names; PDFs carry no creation date, so reruns match."""
    path = Path(path)
    fmt = image_format(path)
    meta = {"CreationDate": None} if fmt == "pdf" else None
    atomic_write(path, lambda f: figure.savefig(f, format=fmt, dpi=150, metadata=meta))
    return path


def image_format(path: str | Path) -> str:
    """The format a file's suffix names (png without one), or a ResreproError listing those matplotlib writes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    known = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in known:
        raise ResreproError(f"{path}: matplotlib cannot write .{fmt} files; choose one of {', '.join(sorted(known))}")
    return fmt
