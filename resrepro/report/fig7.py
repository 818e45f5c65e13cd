"""Fig. 7: std of the layer responses, from a ``resrepro layer-response`` CSV or computed from runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from resrepro.analysis.aggregate import find_runs
from resrepro.analysis.claims import Verdict
from resrepro.analysis.selection import select_runs
from resrepro.errors import ResreproError
from resrepro.models.registry import canonical_model, resolve
from resrepro.report.figure_kit import (
    FigureResult,
    FigureSpec,
    caption_tail,
    check_missing,
    colour,
    judge_figure,
    label,
    new_figure,
)
from resrepro.train.rundir import CHECKPOINT


def draw_fig7(spec: FigureSpec, runs_dir: str | Path | None, *, dataset: str | None = None,
              responses: str | Path | None = None) -> FigureResult:
    """Top: each model's std per layer index in forward order; bottom: the same values sorted descending; one
    column per depth.

    A model's seeds are averaged layer by layer. Computed responses are returned as the table
    ``fig7_responses`` so they can be re-plotted without the checkpoints.
    """
    warnings: list[str] = []
    tables, runs = {}, []
    if responses is not None:
        table, where = read_responses(responses, warnings), responses
    elif runs_dir is not None:
        table, dataset, runs = _responses_of_runs(spec, runs_dir, dataset, warnings)
        tables["fig7_responses"], where = table, runs_dir
    else:
        raise ResreproError("fig7 needs --responses CSV (from `resrepro layer-response`) or --runs DIR")
    present = [m for m in spec.models if m in set(table["model"])]
    missing, why = check_missing("fig7", spec, [m for m in spec.models if m not in present], where, dataset)
    warnings += why
    by_run = table[table["model"].isin(present)]
    mean = by_run.groupby(["model", "layer"])["std"].mean()
    seeds = by_run.groupby("model")["run"].nunique() if "run" in by_run else pd.Series(dtype=int)
    # One column per depth: the paper's one panel puts plain-56 (std ~2-20 at the tiny scale) beside ResNet-20's
    # ~0.98 and plain-20's ~1.01, and the difference Fig. 7 exists to show vanishes; each depth keeps its own
    # axis (logarithmic where its curves lie a factor of 5 apart).
    depths = sorted({resolve(m).depth for m in present}) or [0]
    figure, axes = new_figure(2, len(depths), (3.4 * len(depths) + 0.6, 6.5))
    for model in present:
        s = mean.loc[model].sort_index()
        n = int(seeds.get(model, 1))
        # Same depth, same colour; plain dashed so plain-20 and ResNet-20 stay apart.
        style = dict(color=colour(model), ls="--" if resolve(model).plain else "-", lw=1.2,
                     label=label(model) + (f" (mean of {n} runs)" if n > 1 else ""))
        column = depths.index(resolve(model).depth)
        axes[0, column].plot(s.index.to_numpy(), s.to_numpy(), gid=f"{model}/original", **style)
        axes[1, column].plot(range(1, len(s) + 1), sorted(s.to_numpy(), reverse=True), gid=f"{model}/sorted",
                             **style)
    from matplotlib.ticker import MaxNLocator

    for column, depth in enumerate(depths):
        for ax, order in zip(axes[:, column], ("original", "sorted by magnitude"), strict=True):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(f"layer index ({order})")
            ys = [y for line in ax.lines for y in line.get_ydata() if y > 0]
            if ys and max(ys) > 5 * min(ys):
                ax.set_yscale("log")
            ax.set_ylabel("std" + (" (log)" if ax.get_yscale() == "log" else ""))
            if ax.lines:
                ax.legend(fontsize="small")
        axes[0, column].set_title(f"{depth} layers" if depth else "")
    figure.suptitle(spec.title + ("" if dataset in (None, spec.dataset) else f" (our runs on {dataset})"))
    claims, verdicts = judge_figure("fig7", _per_run(table[table["model"].isin(present)]), dataset)
    return FigureResult(figure, _caption(spec, table, present, missing, warnings, claims, runs), warnings,
                        tables | verdicts, claims)


def _per_run(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run (per model, for a CSV without run names): the mean over its layers of the response std,
    the number Fig. 7's claims compare."""
    by = ["model", "run"] if "run" in table else ["model"]
    return table.groupby(by)["std"].mean().rename("response_std").reset_index()


def read_responses(path: str | Path, warnings: list[str]) -> pd.DataFrame:
    """A layer-response CSV with canonical model names; rows of unknown models dropped with a warning."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ResreproError(f"cannot read layer responses {path} ({e}): write them with "
                            "`resrepro layer-response`") from None
    if not {"model", "layer", "std"} <= set(table.columns):
        raise ResreproError(f"{path} lacks model/layer/std columns: write it with `resrepro layer-response`")
    table = table.assign(model=table["model"].astype(str).map(canonical_model))
    unknown = sorted(set(table["model"]) - {m for m in table["model"] if _known(m)})
    if unknown:
        warnings.append(f"{path}: rows of unknown model(s) {', '.join(unknown)} ignored")
    return table[~table["model"].isin(unknown)]


def _known(model: str) -> bool:
    try:
        resolve(model)
    except ResreproError:
        return False
    return True


def _responses_of_runs(spec: FigureSpec, runs_dir: str | Path, dataset: str | None, warnings: list[str]
                       ) -> tuple[pd.DataFrame, str, list]:
    """The responses of the selected runs with a checkpoint, the dataset shown, and those runs."""
    from resrepro.analysis.response import COLUMNS, run_layer_responses

    runs, skipped = find_runs(runs_dir)
    selection = select_runs(runs, spec.models, dataset=dataset, preferred_dataset=spec.dataset)
    warnings += skipped + selection.left_out
    paths, used = [], []
    for model in spec.models:
        chosen, why = selection.of(model)
        used += [r for r in chosen if (r.path / CHECKPOINT).exists()]
        trained = [r.path for r in chosen if (r.path / CHECKPOINT).exists()]
        if len(trained) < len(chosen):
            why.append(f"{model}: {len(chosen) - len(trained)} run(s) without {CHECKPOINT} left out")
        warnings += why
        paths += trained
    if not paths:
        return pd.DataFrame(columns=list(COLUMNS)), selection.dataset, used
    table = run_layer_responses(paths)
    return table.assign(model=table["model"].map(canonical_model)), selection.dataset, used


def _caption(spec: FigureSpec, table: pd.DataFrame, present: list[str], missing: list[str],
             warnings: list[str], claims: list[Verdict], made_from: list) -> str:
    def setting(col: str) -> str:
        return ", ".join(map(str, table[col].dropna().unique())) if col in table else "not recorded"

    lines = [f"# {spec.title}", "", spec.what, "",
             f"Split: {setting('split')}; BN mode: {setting('bn_mode')}; pooling: {setting('pooling')}. "
             "Each curve is the mean over a model's runs at each layer index.", "",
             "| curve | layers | runs |", "|---|---|---|"]
    for model in present:
        rows = table[table["model"] == model]
        runs = ", ".join(f"`{r}`" for r in rows["run"].unique()) if "run" in rows else "—"
        lines.append(f"| {label(model)} | {rows['layer'].nunique()} | {runs} |")
    return "\n".join(lines + caption_tail("fig7", missing, warnings, claims, made_from)) + "\n"
