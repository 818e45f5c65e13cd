"""The paper's figures (Fig. 1, 4, 6, 7), drawn from run directories: which figures exist, what each plots,
and drawing and writing each one (Fig. 7's drawing is in fig7)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from resrepro.analysis.aggregate import find_runs, frame_of
from resrepro.analysis.claims import Verdict
from resrepro.analysis.selection import select_runs
from resrepro.errors import ResreproError
from resrepro.io import write_text
from resrepro.models.registry import canonical_model
from resrepro.report.curves import Curve, longest, mean_curve, unfinished, x_axis
from resrepro.report.fig7 import draw_fig7
from resrepro.report.figure_kit import (
    FigureResult,
    FigureSpec,
    caption_tail,
    check_missing,
    colour,
    judge_figure,
    label,
    new_figure,
    save,
)
from resrepro.report.keep import destination

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
        "(top) and sorted by magnitude (bottom); one column per depth, each with its own axis (logarithmic where "
        "its curves lie far apart), so that ResNet-20's ~0.98 and plain-20's ~1.01 stay apart."),
}
# Fig. 4's residual nets use option A (Table 2); runs of the default option B stand in when those are missing.
STAND_INS = {"resnet18-A": "resnet18", "resnet34-A": "resnet34"}


def render_figure(
    name: str,
    runs_dir: str | Path | None,
    out_dir: str | Path,
    *,
    dataset: str | None = None,
    responses: str | Path | None = None,
    force: bool = False,
) -> tuple[list[Path], list[str]]:
    """Write ``<name>.png``, ``<name>.pdf`` and the caption ``<name>.md`` (and any data) into ``out_dir``, or
    into its ``partial/`` when the figure there was drawn from more runs (unless ``force``).

    Returns the files written and the warnings (skipped run directories, models without runs). Raises a
    ResreproError naming the runs needed when none of the figure's runs exist.
    """
    result = draw_figure(name, runs_dir, dataset=dataset, responses=responses)
    out, kept = destination(out_dir, name, result.caption, force=force)
    written = [save(result.figure, out / f"{name}.{ext}") for ext in ("png", "pdf")]
    files = {f"{name}.md": result.caption}
    files |= {f"{stem}.csv": table.to_csv(index=False) for stem, table in result.tables.items()}
    for file, text in files.items():
        write_text(out / file, text)
        written.append(out / file)
    return written, result.warnings + kept


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
        return draw_fig7(spec, runs_dir, dataset=dataset, responses=responses)
    if runs_dir is None:
        raise ResreproError(f"{name} is drawn from run directories: pass --runs DIR")
    runs, warnings = find_runs(runs_dir)
    stand_ins = [STAND_INS[m] for m in spec.models if m in STAND_INS]
    selection = select_runs(runs, spec.models + stand_ins, dataset=dataset, preferred_dataset=spec.dataset)
    dataset, warnings = selection.dataset, warnings + selection.left_out
    curves: dict[str, Curve] = {}
    counted = []  # the finished runs of each curve, under the figure's name for the net: the claims' values
    for model in spec.models:
        chosen, why = selection.of(model)
        if not chosen and model in STAND_INS:
            chosen, why = selection.of(STAND_INS[model])
            why += [f"no {model} runs: {STAND_INS[model]} (option B) stands in for it"] if chosen else []
        curve, unreadable = mean_curve(model, chosen) if chosen else (None, [])
        warnings += why + unreadable
        counted.append(frame_of([r for r in chosen if r.finished]).assign(model=canonical_model(model)))
        if curve is not None:
            curves[model] = curve
            if len(curve.data) == 1:
                warnings.append(f"{model}: one evaluation logged (at iteration {int(curve.data.index[0]):,}): its "
                                "curve is a single point; train with a smaller --eval-every to draw one")
    missing, why = check_missing(name, spec, [m for m in spec.models if m not in curves], runs_dir, dataset)
    warnings += why
    figure = _draw_fig1(curves) if name == "fig1" else _draw_panels(spec, curves, epochs=name == "fig4")
    figure.suptitle(spec.title + ("" if dataset == spec.dataset else f" (our runs on {dataset})"))
    claims, tables = judge_figure(name, pd.concat(counted, ignore_index=True), dataset)
    return FigureResult(figure, caption(name, spec, curves, missing, warnings, dataset, claims), warnings, tables,
                        claims)


def _style(curve: Curve, model: str) -> tuple[dict[str, Any], str]:
    """(plot keywords, legend label): an unfinished curve ends in a hollow marker and says so in the legend,
    and a single logged point (a line of one point draws nothing) gets a marker too."""
    marker = {"marker": "o", "markevery": [-1], "mfc": "none", "ms": 6} if unfinished(curve) or \
        len(curve.data) < 2 else {}
    done = int(curve.data.index.max()) if len(curve.data) else 0
    seeds = f" ({len(curve.runs)} seeds)" if len(curve.runs) > 1 else ""
    return marker, label(model) + seeds + (f" (unfinished, {done:,} it.)" if unfinished(curve) else "")


def _draw_fig1(curves: dict[str, Curve]) -> Figure:
    figure, axes = new_figure(1, 2, (9, 3.4))
    span = longest(curves)
    for model, c in curves.items():
        x, xlabel = x_axis(c, False, span)
        marker, name = _style(c, model)
        panels = ((axes[0, 0], "train_error", "train"), (axes[0, 1], "eval_error", c.eval_split))
        for ax, column, role in panels:
            _curve(ax, x, c, column, color=colour(model), lw=1.5, label=name, gid=f"{model}/{role}", **marker)
            ax.set_xlabel(xlabel)
    axes[0, 0].set_ylabel("training error (%)")
    axes[0, 1].set_ylabel(f"{_split(curves)} error (%)")
    for ax in axes[0]:
        _mark_lr_drops(ax, curves.values(), False, span)
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
            _curve(ax, x, c, "train_error", color=col, lw=0.8, ls="-" if epochs else "--", gid=f"{model}/train",
                   **marker)
            _curve(ax, x, c, "eval_error", color=col, lw=2, label=name, gid=f"{model}/{c.eval_split}", **marker)
            ax.set_xlabel(xlabel)
        _mark_lr_drops(ax, [curves[m] for m in models if m in curves], epochs, span)
        ax.set_title(title)
        ax.set_xlim(left=0)
        ax.set_ylabel("error (%)")
        _ylim(ax, *((20, 60) if epochs else (0, 20)))  # the paper's ranges
        if ax.lines:
            ax.legend(fontsize="small")
    return figure


def _curve(ax: Any, x: Any, c: Curve, column: str, **style: Any) -> None:
    """One curve: the mean over its seeds, and the band from the lowest to the highest seed where there are
    several (a mean alone hides how far apart chaotic runs end)."""
    ax.plot(x, 100 * c.data[column].to_numpy(), **style)
    if c.low is not None and c.high is not None and column in c.low:
        ax.fill_between(x, 100 * c.low[column].to_numpy(), 100 * c.high[column].to_numpy(), color=style["color"],
                        alpha=0.15, lw=0, gid=f"{style['gid']}/band")


def _mark_lr_drops(ax: Any, curves: Any, epochs: bool, span: int) -> None:
    """A dotted vertical line where the learning rate is divided by 10 (the curves' steps happen there)."""
    import numpy as np

    drops: set[float] = set()
    for c in curves:
        if len(c.data) < 2:
            continue
        x, _ = x_axis(c, epochs, span)
        drops |= {float(np.interp(d, c.data.index.to_numpy(), np.asarray(x, dtype=float))) for d in c.lr_drops()}
    for i, at in enumerate(sorted(drops)):
        ax.axvline(at, color="#999999", lw=0.8, ls=":", zorder=0, label="lr ÷ 10" if i == 0 else None,
                   gid=f"lr-drop/{i}")


def _split(curves: dict[str, Curve]) -> str:
    return "val" if any(c.eval_split == "val" for c in curves.values()) else "test"


def _ylim(ax: Any, lo: float, hi: float) -> None:
    """The paper's axis range, widened to multiples of 5 where a curve ends outside it (tiny-scale plain-56 does);
    the first iterations' high errors are cut off, as in the paper, so the ends stay apart."""
    ends = [float(line.get_ydata()[-1]) for line in ax.lines if len(line.get_ydata())
            and not str(line.get_gid()).startswith("lr-drop") and math.isfinite(float(line.get_ydata()[-1]))]
    if ends:
        lo, hi = min(lo, 5 * math.floor(min(ends) / 5)), max(hi, 5 * math.ceil(max(ends) / 5))
    ax.set_ylim(lo, hi)


def caption(name: str, spec: FigureSpec, curves: dict[str, Curve], missing: list[str], warnings: list[str],
            dataset: str | None, claims: list[Verdict]) -> str:
    split = {"val": "validation", "test": "test"}[_split(curves)]
    lines = [f"# {spec.title}", "", spec.what.format(split=split), "",
             f"Dataset: {dataset}. Each curve is the mean over a model's seeds at every iteration all of "
             "them logged, shaded from the lowest to the highest seed where there are several (the legend counts "
             "them); dotted verticals: the lr divided by 10. Errors as logged during training (final iterate, no "
             "model selection).", "",
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
    runs = [r for c in curves.values() for r in c.runs]
    return "\n".join(lines + caption_tail(name, missing, warnings, claims, runs)) + "\n"


def _mean(values: list[Any]) -> float | None:
    return None if any(v is None for v in values) else sum(float(v) for v in values) / len(values)


def _pct(v: Any) -> str:
    return "—" if v is None or not math.isfinite(float(v)) else f"{100 * float(v):.2f}"
