"""The ``resrepro`` command line: thin Typer commands that parse, call one library function, and print.

Only typer and rich are imported here; torch, timm, pandas and matplotlib are imported inside commands so
``resrepro --help`` stays instant.
"""

from __future__ import annotations

import signal
import sys

import typer

from resrepro.cli.common import app, command, fail, stopped

__all__ = ["app", "main"]

# Each module adds its commands to ``app`` (import order is the order of `resrepro --help`).
from resrepro.cli import models as _models  # noqa: E402,F401  isort: skip
from resrepro.cli import train as _train  # noqa: E402,F401  isort: skip
from resrepro.cli import detection as _detection  # noqa: E402,F401  isort: skip
from resrepro.cli import evaluate as _evaluate  # noqa: E402,F401  isort: skip
from resrepro.cli import bench as _bench  # noqa: E402,F401  isort: skip
from resrepro.cli import sweep as _sweep  # noqa: E402,F401  isort: skip
from resrepro.cli import report as _report  # noqa: E402,F401  isort: skip
from resrepro.cli import figures as _figures  # noqa: E402,F401  isort: skip
from resrepro.cli import analysis as _analysis  # noqa: E402,F401  isort: skip


def main() -> None:
    """Console entry point: user errors become one red line and exit code 2, never a traceback."""
    from resrepro.errors import ResreproError

    try:
        # Outside standalone mode click returns the code of a typer.Exit raised in a command, not exit with it.
        code = command()(standalone_mode=False)
    except ResreproError as e:
        if getattr(e, "signal", None) == signal.SIGINT:  # a training stopped by Ctrl-C: asked for, not an error
            stopped(str(e))
        fail(str(e))
    except (KeyboardInterrupt, typer.Abort):
        stopped("interrupted")
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.TyperException as e:  # usage errors: bad option values, missing arguments
        if type(e).__name__ == "NoArgsIsHelpError":
            # `resrepro` or `resrepro train` alone asks what there is: the error carries the help, which click
            # would print only in standalone mode. Shown as `--help` shows it, on stdout, and not an error.
            typer.echo(e.format_message())
            sys.exit(0)
        fail(e.format_message().replace("\n", " ").replace("Value error, ", ""), code=e.exit_code)
    if isinstance(code, int) and code:
        sys.exit(code)
