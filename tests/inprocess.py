"""`resrepro ARGS` run in the test's own process: no interpreter start-up, and monkeypatches apply."""

from __future__ import annotations

import sys


def in_process_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `resrepro ARGS`."""
    from resrepro.cli import main

    monkeypatch.setattr(sys, "argv", ["resrepro", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
