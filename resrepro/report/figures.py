"""The paper's figures (Fig. 1, 4, 6, 7) and ad-hoc training curves, drawn from run directories.

Matplotlib is imported inside the functions and drives its Agg canvas directly (no pyplot), so importing this
module is cheap and rendering never touches a user's interactive backend.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from resrepro.analysis.aggregate import Run, canonical_model, find_runs
from resrepro.analysis.selection import select_runs
from resrepro.errors import ResreproError
from resrepro.io import atomic_write, write_text
from resrepro.models.registry import resolve
from resrepro.report.curves import Curve, cut_short, longest, mean_curve, read_metrics, unfinished, x_axis
from resrepro.train.rundir import CONFIG, RunDir

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


FIGURES = {
    "fig1": FigureSpec(
        "Fig. 1: plain nets on CIFAR-10", "cifar10", (("", ("plain20", "plain56")),),
        "Training error (left) and {split} error (right) vs iterations of the 20- and 56-layer plain nets."),
    "fig4": FigureSpec(
        "Fig. 4: training on ImageNet", "imagenet",
        (("plain", ("plain18", "plain34")), ("ResNet", ("resnet18-A", "resnet34-A"))),
        "Training error (thin) and center-crop {split} error (bold) vs epochs."),
    "fig6": FigureSpec(
        "Fig. 6: training on CIFAR-10", "cifar10",
        (("plain", ("plain20", "plain32", "plain44", "plain56")),
         ("ResNet", ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")),
         ("ResNet-110 vs ResNet-1202", ("resnet110", "resnet1202"))),
        "Training error (dashed) and {split} error (bold) vs iterations."),
    "fig7": FigureSpec(
        "Fig. 7: std of layer responses on CIFAR-10", "cifar10",
        (("", ("plain20", "plain56", "resnet20", "resnet56", "resnet110")),),
        "Std of each 3×3 layer's response (after BN, before ReLU/addition), in the layers' original order "
        "(top) and sorted by magnitude (bottom)."),
}
# Fig. 4's residual nets use option A (Table 2); runs of the default option B stand in when those are missing.
STAND_INS = {"resnet18-A": "resnet18", "resnet34-A": "resnet34"}
DEPTH_COLOURS = {18: "#1f77b4", 20: "#e69f00", 32: "#17becf", 34: "#d62728", 44: "#2ca02c", 56: "#d62728",
                 110: "#222222", 1202: "#1f77b4"}


@dataclass
class FigureResult:
    figure: Figure
    caption: str  # Markdown: what is plotted, from which runs, what is missing
    warnings: list[str]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # data worth saving beside the figure


def render_figure(
    name: str,
    runs_dir: str | Path | None,
    out_dir: str | Path,
    *,
    dataset: str | None = None,
    responses: str | Path | None = None,
) -> tuple[list[Path], list[str]]:
    """Write ``<name>.png``, ``<name>.pdf`` and the caption ``<name>.md`` (and any data) into ``out_dir``.

    Returns the files written and the warnings (skipped run directories, models without runs). Raises a
    ResreproError naming the runs needed when none of the figure's runs exist.
    """
    result = draw_figure(name, runs_dir, dataset=dataset, responses=responses)
    out = Path(out_dir)
    written = [save(result.figure, out / f"{name}.{ext}") for ext in ("png", "pdf")]
    files = {f"{name}.md": result.caption}
    files |= {f"{stem}.csv": table.to_csv(index=False) for stem, table in result.tables.items()}
    for file, text in files.items():
        write_text(out / file, text)
        written.append(out / file)
    return written, result.warnings


def default_out(name: str, runs_dir: str | Path | None) -> Path:
    """Where `resrepro figure` writes unless told: results/<name>/<scale>, as `resrepro sweep` does, the scale
    being the one whose planned runs have the settings of the runs found (results/<name> for other runs)."""
    from resrepro.analysis.aggregate import setting
    from resrepro.experiments import list_experiments, load_experiment

    out = Path("results") / name
    if runs_dir is None or not Path(runs_dir).is_dir() or name not in list_experiments():
        return out
    found = {setting(r.config) for r in find_runs(runs_dir)[0] if r.model in FIGURES[name].models}
    matches = {}
    for scale in load_experiment(name).scales:
        planned = {setting(r.spec.to_dict()) for r in load_experiment(name, scale).runs}
        matches[scale] = len(found & planned)
    best = max(matches, key=matches.get, default=None)
    return out / best if best is not None and matches[best] else out


def draw_figure(
    name: str,
    runs_dir: str | Path | None,
    *,
    dataset: str | None = None,
    responses: str | Path | None = None,
) -> FigureResult:
    """The figure, caption and warnings of one of :data:`FIGURES`; ``responses`` (a CSV) is for fig7 only."""
    if name not in FIGURES:
        raise ResreproError(f"unknown figure {name!r}: choose one of {', '.join(FIGURES)}")
    spec = FIGURES[name]
    if name == "fig7":
        from resrepro.report.fig7 import draw_fig7

        return draw_fig7(spec, runs_dir, dataset=dataset, responses=responses)
    if runs_dir is None:
        raise ResreproError(f"{name} is drawn from run directories: pass --runs DIR")
    runs, warnings = find_runs(runs_dir)
    stand_ins = [STAND_INS[m] for m in spec.models if m in STAND_INS]
    selection = select_runs(runs, spec.models + stand_ins, dataset=dataset, preferred_dataset=spec.dataset)
    dataset, warnings = selection.dataset, warnings + selection.left_out
    curves: dict[str, Curve] = {}
    for model in spec.models:
        chosen, why = selection.of(model)
        if not chosen and model in STAND_INS:
            chosen, why = selection.of(STAND_INS[model])
            why += [f"no {model} runs: {STAND_INS[model]} (option B) stands in for it"] if chosen else []
        curve, unreadable = mean_curve(model, chosen) if chosen else (None, [])
        warnings += why + unreadable
        if curve is not None:
            curves[model] = curve
    missing, why = check_missing(name, spec, [m for m in spec.models if m not in curves], runs_dir, dataset)
    warnings += why
    figure = _draw_fig1(curves) if name == "fig1" else _draw_panels(spec, curves, epochs=name == "fig4")
    figure.suptitle(spec.title + ("" if dataset == spec.dataset else f" (our runs on {dataset})"))
    return FigureResult(figure, caption(name, spec, curves, missing, warnings, dataset), warnings)


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


def _style(curve: Curve, model: str) -> tuple[dict[str, Any], str]:
    """(plot keywords, legend label): an unfinished curve ends in a hollow marker and says so in the legend,
    and a single logged point (a line of one point draws nothing) gets a marker too."""
    marker = {"marker": "o", "markevery": [-1], "mfc": "none", "ms": 6} if unfinished(curve) or \
        len(curve.data) < 2 else {}
    done = int(curve.data.index.max()) if len(curve.data) else 0
    return marker, label(model) + (f" (unfinished, {done:,} it.)" if unfinished(curve) else "")


def _draw_fig1(curves: dict[str, Curve]) -> Figure:
    figure, axes = new_figure(1, 2, (9, 3.4))
    span = longest(curves)
    for model, c in curves.items():
        x, xlabel = x_axis(c, False, span)
        marker, name = _style(c, model)
        panels = ((axes[0, 0], "train_error", "train"), (axes[0, 1], "eval_error", c.eval_split))
        for ax, column, role in panels:
            ax.plot(x, 100 * c.data[column].to_numpy(), color=colour(model), lw=1.5, label=name,
                    gid=f"{model}/{role}", **marker)
            ax.set_xlabel(xlabel)
    axes[0, 0].set_ylabel("training error (%)")
    axes[0, 1].set_ylabel(f"{_split(curves)} error (%)")
    for ax in axes[0]:
        ax.set_xlim(left=0)
        _ylim(ax, 0, 20)
        ax.legend()
    return figure


def _draw_panels(spec: FigureSpec, curves: dict[str, Curve], epochs: bool) -> Figure:
    """Fig. 6 (dashed training, bold test error) or Fig. 4 (thin training, bold validation error)."""
    figure, axes = new_figure(1, len(spec.panels), (4.2 * len(spec.panels), 3.4))
    span = longest(curves)
    for ax, (title, models) in zip(axes[0], spec.panels, strict=True):
        for model in (m for m in models if m in curves):
            c, col = curves[model], colour(model)
            x, xlabel = x_axis(c, epochs, span)
            marker, name = _style(c, model)
            ax.plot(x, 100 * c.data["train_error"].to_numpy(), color=col, lw=0.8, ls="-" if epochs else "--",
                    gid=f"{model}/train", **marker)
            ax.plot(x, 100 * c.data["eval_error"].to_numpy(), color=col, lw=2, label=name,
                    gid=f"{model}/{c.eval_split}", **marker)
            ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.set_xlim(left=0)
        ax.set_ylabel("error (%)")
        _ylim(ax, *((20, 60) if epochs else (0, 20)))  # the paper's ranges
        if ax.lines:
            ax.legend(fontsize="small")
    return figure


def _split(curves: dict[str, Curve]) -> str:
    return "val" if any(c.eval_split == "val" for c in curves.values()) else "test"


def _ylim(ax: Any, lo: float, hi: float) -> None:
    """The paper's axis range, widened to multiples of 5 where the data leave it (tiny-scale runs do)."""
    ys = [float(y) for line in ax.lines for y in line.get_ydata() if math.isfinite(float(y))]
    if ys:
        lo, hi = min(lo, 5 * math.floor(min(ys) / 5)), max(hi, 5 * math.ceil(max(ys) / 5))
    ax.set_ylim(lo, hi)


def caption(name: str, spec: FigureSpec, curves: dict[str, Curve], missing: list[str], warnings: list[str],
            dataset: str | None) -> str:
    split = {"val": "validation", "test": "test"}[_split(curves)]
    lines = [f"# {spec.title}", "", spec.what.format(split=split), "",
             f"Dataset: {dataset}. Each curve is the mean over a model's seeds at every iteration all of "
             "them logged; errors as logged during training (final iterate, no model selection).", "",
             f"| curve | model | seeds | iterations | final training error (%) | final {split} error (%) "
             "| runs |",
             "|---|---|---|---|---|---|---|"]
    for model, c in curves.items():
        last = c.data.iloc[-1] if len(c.data) else pd.Series(dtype=float)
        seeds = ", ".join(str(r.config.get("seed")) for r in c.runs)
        paths = ", ".join(f"`{r.path}`" + ("" if r.finished else " (unfinished)") for r in c.runs)
        iters = f"{int(c.data.index.max()):,}" if len(c.data) else "0"
        errors = f"{_pct(last.get('train_error'))} | {_pct(last.get('eval_error'))}"
        ends = [r.summary.get("iter") for r in c.runs if r.finished]
        if len(ends) == len(c.runs) and all(isinstance(i, int) for i in ends):
            # Finished runs: their final numbers are summary.json's, whatever their metrics.csv still holds.
            finals = [r.summary["final"] for r in c.runs]
            iters = f"{min(ends):,}"
            errors = " | ".join(_pct(_mean([f.get(k) for f in finals])) for k in ("train_error", "eval_error"))
        lines.append(f"| {label(model)} | {c.runs[0].model} | {seeds} | {iters} | {errors} | {paths} |")
    return "\n".join(lines + caption_tail(name, missing, warnings)) + "\n"


def caption_tail(name: str, missing: list[str], warnings: list[str]) -> list[str]:
    lines = ["", f"Missing: {', '.join(missing)} (train with `resrepro sweep {name}`)." if missing
             else "Missing: none."]
    return lines + (["", "Warnings:", *[f"- {w}" for w in warnings]] if warnings else [])


def _mean(values: list[Any]) -> float | None:
    return None if any(v is None for v in values) else sum(float(v) for v in values) / len(values)


def _pct(v: Any) -> str:
    return "—" if v is None or not math.isfinite(float(v)) else f"{100 * float(v):.2f}"


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


# metric -> (training column, eval column, scale, y label)
PLOT_METRICS = {"error": ("train_error", "eval_error", 100.0, "error (%)"),
                "loss": ("train_loss", "eval_loss", 1.0, "loss"),
                "lr": ("lr", None, 1.0, "learning rate")}


def plot_runs(run_dirs: Iterable[str | Path], metric: str = "error", out: str | Path = "curves.png") -> Path:
    """Training (dashed) and eval (solid) curves of ``metric`` for any run directories, one colour per run."""
    if metric not in PLOT_METRICS:
        raise ResreproError(f"unknown metric {metric!r}: choose one of {', '.join(PLOT_METRICS)}")
    paths = [Path(d) for d in run_dirs]
    if not paths:
        raise ResreproError("pass at least one run directory to plot")
    image_format(out)  # before reading any run
    for path in paths:
        if path.is_file():
            raise ResreproError(f"{path} is a file: plot takes run directories")
    train_col, eval_col, scale, ylabel = PLOT_METRICS[metric]
    figure, axes = new_figure(1, 1, (6.5, 4))
    ax = axes[0, 0]
    for i, path in enumerate(paths):
        config = RunDir(path).read_config()
        if not isinstance(config, dict):
            raise ResreproError(f"{path / CONFIG} holds no JSON object: the run directory is damaged")
        model, m = canonical_model(str(config.get("model", "?"))), read_metrics(path)
        summary = RunDir(path).read_summary()
        cut = cut_short(Run(path, config, summary if isinstance(summary, dict) else None), m)
        if cut:
            raise ResreproError(f"{cut}: its curve would end early; restore the file from a copy to plot it")
        name, col = f"{path.name} ({model})", f"C{i % 10}"
        if train_col in m:
            ax.plot(m.index, scale * m[train_col].to_numpy(), color=col, lw=1, ls="--" if eval_col else "-",
                    label=None if eval_col else name, gid=f"{path}/train")
        if eval_col in m:
            splits = m["eval_split"].dropna() if "eval_split" in m else pd.Series(dtype=str)
            split = splits.iloc[-1] if len(splits) else "eval"
            ax.plot(m.index, scale * m[eval_col].to_numpy(), color=col, lw=2, label=f"{name}, {split}",
                    gid=f"{path}/eval")
    if metric == "lr":
        ax.set_yscale("log")
    ax.set_xlabel("iterations")
    ax.set_ylabel(ylabel if metric == "lr" else f"{ylabel}; dashed: training")
    if ax.lines:
        ax.legend(fontsize="small")
    return save(figure, out)
