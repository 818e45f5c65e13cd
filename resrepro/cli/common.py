"""What every command shares: the app, stderr console, the one-line error, and table output formats."""

from __future__ import annotations

import functools
import json
import os
import sys
import typing
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

import click
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
    # Click's plain two-column help, not Typer's rich table: at 80 columns the table split option names over four
    # columns and left help text a third of the width; plain help also prints [brackets] as written.
    rich_markup_mode=None,
)

# Messages and progress go to stderr so that data on stdout (tables, CSV, JSON) pipes cleanly into files.
err = Console(stderr=True)


class Format(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    json = "json"


def command() -> click.Command:
    """The click command of ``app`` — what ``main`` runs and what the help test renders — with each argument
    shown as click shows one: NAME (NAME... for several) and its choices if it has some. Typer would add its
    Python type (``<str>``, ``<list[Path]>``), which says nothing to a user."""
    from typer.core import TyperArgument

    root = typer.main.get_command(app)
    todo = [root]
    while todo:
        cmd = todo.pop()
        todo += getattr(cmd, "commands", {}).values()
        for param in cmd.params:
            if isinstance(param, TyperArgument):
                many = param.nargs != 1
                param.metavar = param.metavar or (param.name.upper().removesuffix("S") if many else param.name.upper())
                param._rich_display_name = functools.partial(str, param.metavar + ("..." if many else ""))
                if not param.type_descriptor.is_choice:
                    param.display_type_rich = lambda ctx: None
    return root


def choices(name: str, literal: Any) -> type[Enum]:
    """A str Enum of a ``Literal[...]``'s values, for Typer, which lists an Enum's values as the choices."""
    values = typing.get_args(literal)
    return Enum(name, {v.replace("-", "_"): v for v in values}, type=str)


def fail(message: str, code: int = 2) -> NoReturn:
    # Escaped: messages name TOML tables ([scale.tiny], [[runs]]), which rich would take for markup and drop.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def stopped(message: str) -> NoReturn:
    """Ctrl-C: the stop the user asked for, said in a plain line (not a red error), with the shell's code 130."""
    err.print(escape(message), highlight=False, soft_wrap=True)
    raise SystemExit(130)


def check_output(path: Path, *, folder: bool, option: str = "--out") -> None:
    """Refuse, before any work, an output that could not be written: a file where a folder goes (or the reverse),
    a path under a file, a place without write permission or on a read-only filesystem. ResreproError if so."""
    from resrepro.errors import ResreproError

    what = f"{option} {path}"
    try:
        if path.exists():
            if path.is_dir() != folder:
                raise ResreproError(f"{what} is a {'file' if folder else 'folder'}; name a "
                                    f"{'folder' if folder else 'file'} to write")
            # A file is replaced through a temp file beside it, so its folder must be writable too.
            place = path if folder else path.parent
        else:
            place = next(p for p in path.absolute().parents if p.exists())
            if not place.is_dir():
                raise ResreproError(f"{what} cannot be created: {place} is a file")
    except OSError as e:  # a stat refused along the path
        raise ResreproError(f"{what} cannot be checked: {e.strerror}") from None
    if not os.access(place, os.W_OK | os.X_OK):
        raise ResreproError(f"{what} cannot be written: no write permission in {place} (or it is read-only)")


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
        for i, col in enumerate(df.columns):
            # The first column names the row (resnet101-v1.5): kept whole at any width, the others wrap.
            whole = {"no_wrap": True, "min_width": int(df[col].astype(str).str.len().max())} if i == 0 else {}
            table.add_column(str(col), justify="right" if df[col].dtype.kind in "if" else "left", **whole)
        for row in df.astype(object).where(df.notna(), "—").itertuples(index=False):
            table.add_row(*(str(v) for v in row))
        Console().print(table)


def say_claims(written: list[Path]) -> None:
    """Each claim's verdict and numbers, from the ``*_claims.csv`` files a render wrote, one line each."""
    from resrepro.report.claims import read_verdicts

    for path in (p for p in written if p.name.endswith("_claims.csv")):
        for verdict in read_verdicts(path):
            err.print(f"claim {escape(verdict)}", highlight=False, soft_wrap=True)
