"""`resrepro figure`, `resrepro plot`: the paper's figures and ad-hoc curves from run directories."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from resrepro.cli.common import app, check_output, err, say_claims


class FigureName(str, Enum):
    fig1 = "fig1"
    fig4 = "fig4"
    fig6 = "fig6"
    fig7 = "fig7"


class Metric(str, Enum):
    error = "error"
    loss = "loss"
    lr = "lr"


def warn(messages: list[str]) -> None:
    for m in messages:
        err.print(f"[yellow]warning: {escape(m)}[/]", highlight=False, soft_wrap=True)


@app.command()
def figure(
    name: Annotated[FigureName, typer.Argument(
        help="fig1 (plain-20/56), fig4 (ImageNet), fig6 (CIFAR-10, plain vs ResNet), fig7 (layer "
        "responses).")],
    runs: Annotated[Path, typer.Option(help="Folder searched (recursively) for runs.")] = Path("runs"),
    out: Annotated[Path | None, typer.Option(help="Output folder (default: results/NAME).")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Only runs on this dataset (default: the paper's, else the one with runs).")] = None,
    responses: Annotated[Path | None, typer.Option(
        help="fig7: a CSV from `resrepro layer-response`, instead of computing it from --runs.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the figure in OUT even when it was drawn from more runs [default: write the new "
        "one to OUT/partial/, keep the old].")] = False,
) -> None:
    """Render one of the paper's figures (PNG, PDF, caption) from run directories; says what is missing."""
    from resrepro.report.figures import default_out, render_figure

    out = out or default_out(name.value, runs)
    check_output(out, folder=True)
    written, warnings = render_figure(name.value, runs, out, dataset=dataset, responses=responses,
                                      force=force)
    warn(warnings)
    for path in written:
        typer.echo(path)
    say_claims(written)


@app.command()
def plot(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories.")],
    metric: Annotated[Metric, typer.Option(help="What to plot against iterations.")] = Metric.error,
    out: Annotated[Path, typer.Option(help="Image file; its suffix picks the format.")] = Path("curves.png"),
) -> None:
    """Plot training (dashed) and eval (solid) curves of any run directories into one image."""
    from resrepro.report.plot import plot_runs

    check_output(out, folder=False)
    path, warnings = plot_runs(run_dirs, metric.value, out)
    warn(warnings)
    typer.echo(path)
