"""What every command shares: the app, stderr console, the one-line error, and table output formats."""

from __future__ import annotations

import json
import sys
import typing
from enum import Enum
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    name="resrepro",
    help="Reproduce every experiment of He et al., 'Deep Residual Learning for Image Recognition' (2015): "
    "each table and figure one command away, with the paper's numbers beside ours.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Messages and progress go to stderr so that data on stdout (tables, CSV, JSON) pipes cleanly into files.
err = Console(stderr=True)


class Format(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    json = "json"


def choices(name: str, literal: Any) -> type[Enum]:
    """A str Enum of a ``Literal[...]``'s values, for Typer, which lists an Enum's values as the choices."""
    values = typing.get_args(literal)
    return Enum(name, {v.replace("-", "_"): v for v in values}, type=str)


def fail(message: str, code: int = 2) -> NoReturn:
    # Escaped: messages name TOML tables ([scale.tiny], [[runs]]), which rich would take for markup and drop.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def print_records(records: list[dict[str, Any]], fmt: Format, title: str | None = None) -> None:
    """Print rows as a rich table (to stdout), Markdown, CSV or JSON."""
    if fmt is Format.json:
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
        return
    import pandas as pd

    df = pd.DataFrame.from_records(records)
    if fmt is Format.csv:
        sys.stdout.write(df.to_csv(index=False))
    elif fmt is Format.markdown:
        sys.stdout.write(df.to_markdown(index=False) + "\n")
    else:
        from rich.table import Table

        table = Table(title=title)
        for col in df.columns:
            table.add_column(str(col), justify="right" if df[col].dtype.kind in "if" else "left")
        for row in df.astype(object).where(df.notna(), "—").itertuples(index=False):
            table.add_row(*(str(v) for v in row))
        Console().print(table)
