"""Nothing rendered is replaced by less: an artefact built from fewer runs than the one already in its folder
(a committed 5-seed figure, a user's first 1-seed sweep) goes to the folder's ``partial/`` instead."""

from __future__ import annotations

import re
from pathlib import Path

PARTIAL = "partial"  # OUT/<name>/<scale>/partial/: ignored by git, never shown by `resrepro report`
RUN_PATH = re.compile(r"`([^`\s]+/[^`\s]+)`")  # a run directory as a figure's caption lists it


def runs_in(markdown: str) -> int:
    """How many runs a caption or table was built from: the run directories a figure's caption lists, else the
    sum of a table's ``n`` column (runs counted per row)."""
    paths = set(RUN_PATH.findall(markdown))
    if paths:
        return len(paths)
    total, column = 0, None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            column = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if column is None:  # the header row
            column = cells.index("n") if "n" in cells else -1
        elif 0 <= column < len(cells) and cells[column].isdigit():
            total += int(cells[column])
    return total


def destination(folder: str | Path, name: str, markdown: str, *, force: bool = False) -> tuple[Path, list[str]]:
    """Where the artefact ``name`` whose caption or table is ``markdown`` goes: ``folder``, unless the one
    there (its ``<name>.md``) was built from more runs and ``force`` is off, then ``folder/partial``, with a
    warning saying so."""
    folder = Path(folder)
    try:
        before = runs_in((folder / f"{name}.md").read_text())
    except (OSError, UnicodeDecodeError):  # nothing there (or unreadable): nothing to keep
        return folder, []
    now = runs_in(markdown)
    if force or now >= before:
        return folder, []
    partial = folder / PARTIAL
    return partial, [f"{name} built from {now} run{'s' * (now != 1)}, fewer than the {before} of the one in "
                     f"{folder}: written to {partial} instead (--force replaces it)"]
