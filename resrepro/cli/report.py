"""`resrepro table`: one of the paper's tables with our numbers from run directories beside the paper's."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from resrepro.cli.common import app, check_output, err

DEFAULT_RUNS = Path("runs")  # where `resrepro sweep` and `resrepro figure` keep runs by default


class TableFormat(str, Enum):
    markdown = "markdown"
    csv = "csv"
    latex = "latex"


@app.command()
def table(
    name: Annotated[str, typer.Argument(
        help="table2, table3, table4, table5 (ImageNet), table6, ablation-cifar, calibration (CIFAR-10).")],
    runs: Annotated[Path | None, typer.Option(
        help="Folder searched (recursively) for run directories \\[default: ./runs if it exists, else the "
        "paper's numbers only].")] = None,
    fmt: Annotated[TableFormat, typer.Option(
        "--format", help="Output format (data go to stdout).")] = TableFormat.markdown,
    dataset: Annotated[str | None, typer.Option(
        help="Only runs on this dataset \\[default: the paper's if it has runs, else the one with "
        "most].")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the table to this file instead of stdout.")] = None,
) -> None:
    """Render one of the paper's tables with our numbers (mean ± std over seeds) beside the paper's."""
    from resrepro.io import write_text
    from resrepro.report.tables import render_table

    if out is not None:
        check_output(out, folder=False)
    if runs is None and DEFAULT_RUNS.is_dir():
        runs = DEFAULT_RUNS
    text, warnings = render_table(name, runs, fmt.value, dataset)
    if runs is None:
        warnings = [f"no ./{DEFAULT_RUNS} folder: the paper's numbers only (pass --runs DIR)", *warnings]
    for w in warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if out is None:
        sys.stdout.write(text)
    else:
        write_text(out, text)
        err.print(f"wrote {escape(str(out))}", highlight=False)
