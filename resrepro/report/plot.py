"""`resrepro plot`: training curves of any run directories, one colour per run (not one of the paper's
figures: no selection of runs, no paper ranges)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from resrepro.analysis.aggregate import Run
from resrepro.errors import ResreproError
from resrepro.models.registry import canonical_model
from resrepro.report.curves import cut_short, read_metrics
from resrepro.report.figure_kit import image_format, new_figure, save
from resrepro.train.rundir import CONFIG, RunDir

# metric -> (training column, eval column, scale, y label)
PLOT_METRICS = {"error": ("train_error", "eval_error", 100.0, "error (%)"),
                "loss": ("train_loss", "eval_loss", 1.0, "loss"),
                "lr": ("lr", None, 1.0, "learning rate")}


def plot_runs(run_dirs: Iterable[str | Path], metric: str = "error", out: str | Path = "curves.png"
              ) -> tuple[Path, list[str]]:
    """Training (dashed) and eval (solid) curves of ``metric`` for any run directories, one colour per run; and a
    warning for each run logged once (a line of one point draws nothing: it gets a marker)."""
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
    ax, warnings = axes[0, 0], []
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
        # The lr holds between logged rows and changes at once: steps, not ramps.
        style = {"drawstyle": "steps-post"} if metric == "lr" else {}
        if len(m) == 1:
            warnings.append(f"{path}: one row logged (iteration {int(m.index[0]):,}): drawn as a single point; "
                            "train with a smaller --eval-every for a curve")
            style |= {"marker": "o"}
        if train_col in m:
            ax.plot(m.index, scale * m[train_col].to_numpy(), color=col, lw=1, ls="--" if eval_col else "-",
                    label=None if eval_col else name, gid=f"{path}/train", **style)
        if eval_col in m:
            splits = m["eval_split"].dropna() if "eval_split" in m else pd.Series(dtype=str)
            split = splits.iloc[-1] if len(splits) else "eval"
            ax.plot(m.index, scale * m[eval_col].to_numpy(), color=col, lw=2, label=f"{name}, {split}",
                    gid=f"{path}/eval", **style)
    if metric == "lr":
        ax.set_yscale("log")
    ax.set_xlabel("iterations")
    ax.set_ylabel(ylabel if metric == "lr" else f"{ylabel}; dashed: training")
    if ax.lines:
        ax.legend(fontsize="small")
    return save(figure, out), warnings
