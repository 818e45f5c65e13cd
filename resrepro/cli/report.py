"""`resrepro table`: one of the paper's tables with our numbers from run directories beside the paper's."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from resrepro.cli.common import app, check_output, err, say_claims

DEFAULT_RUNS = Path("runs")  # where `resrepro sweep` and `resrepro figure` keep runs by default


class TableFormat(str, Enum):
    markdown = "markdown"
    csv = "csv"
    latex = "latex"


@app.command()
def table(
    # Spelled out, not read from the table registry (which imports pandas): `--help` stays instant. A test
    # holds this list to the registry's names.
    name: Annotated[str, typer.Argument(
        help="table2, table3, table4, table5 (ImageNet), table6, ablation-cifar, calibration (CIFAR-10), "
        "table7 (PASCAL VOC), table8 (COCO).")],
    runs: Annotated[Path | None, typer.Option(
        help="Folder searched (recursively) for run directories [default: ./runs if it exists, else the "
        "paper's numbers only].")] = None,
    fmt: Annotated[TableFormat, typer.Option(
        "--format", help="Output format (data go to stdout).")] = TableFormat.markdown,
    dataset: Annotated[str | None, typer.Option(
        help="Only runs on this dataset [default: the paper's if it has runs, else the one with "
        "most].")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the table to this file instead of stdout.")] = None,
) -> None:
    """Render one of the paper's tables with our numbers (mean ± std over seeds) beside the paper's, and the
    verdict on each of its claims (holds / fails / not enough runs)."""
    from resrepro.io import write_text
    from resrepro.report.claims import claim_lines
    from resrepro.report.table_kit import check_format, render
    from resrepro.report.tables import build_table

    if out is not None:
        check_output(out, folder=False)
    if runs is None and DEFAULT_RUNS.is_dir():
        runs = DEFAULT_RUNS
    check_format(fmt.value)
    t = build_table(name, runs, dataset)
    text, warnings = render(t, fmt.value), t.warnings
    if runs is None:
        warnings = [f"no ./{DEFAULT_RUNS} folder: the paper's numbers only (pass --runs DIR)", *warnings]
    for w in warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if fmt != TableFormat.markdown:  # Markdown carries the claims under the table; CSV and LaTeX hold numbers
        for claim in claim_lines(t.claims)[2:]:
            err.print(escape(claim.removeprefix("- ").replace("**", "")), highlight=False, soft_wrap=True)
    if out is None:
        sys.stdout.write(text)
    else:
        write_text(out, text)
        err.print(f"wrote {escape(str(out))}", highlight=False)


@app.command()
def report(
    runs: Annotated[Path, typer.Option(
        help="Runs root, as for `resrepro sweep` (RUNS/GROUP/SCALE/MODEL-sSEED); if absent, the page shows what "
        "OUT already holds.")] = DEFAULT_RUNS,
    out: Annotated[Path, typer.Option(
        help="Results folder: artefacts are re-rendered into OUT/NAME/SCALE, the page is OUT/report.html and "
        "OUT/report.md.")] = Path("results"),
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an artefact even when the one in OUT was built from more runs [default: write "
        "the new one to OUT/NAME/SCALE/partial/, keep the old; the page shows the old].")] = False,
) -> None:
    """One static page (HTML, images embedded, and its Markdown twin) of every table and figure with runs."""
    from resrepro.errors import ResreproError
    from resrepro.report.gallery import build_report

    check_output(out, folder=True)
    if runs.exists() and not runs.is_dir():
        raise ResreproError(f"--runs {runs} is a file: name the folder holding your runs")
    if not runs.exists():
        err.print(f"[yellow]warning:[/] no {escape(str(runs))} folder: nothing re-rendered, the page shows what "
                  f"{escape(str(out))} holds", highlight=False, soft_wrap=True)
    written, warnings = build_report(runs if runs.exists() else None, out, force=force)
    for w in warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    for path in written:
        err.print(f"wrote {escape(str(path))}", highlight=False, soft_wrap=True)
    for artefact in dict.fromkeys(p.parent for p in written if p.name.endswith("_claims.csv")):
        err.print(f"[bold]{escape(str(artefact))}[/]", highlight=False)
        say_claims([p for p in written if p.parent == artefact])
