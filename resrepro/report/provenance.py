"""What made an artefact: the machines, commits and library versions its runs recorded (summary.json's
``provenance``), and the command that rendered it. Training is chaotic — another CPU changes the last bit and,
after a few hundred steps, the outcome — so an artefact says which machines made its runs, and says so loudly
when they were several."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROVENANCE = "provenance.json"  # beside an artefact rendered from runs: what made it
# What tells two runs' origins apart; resrepro's version and Python follow the commit and rarely matter.
KEYS = ("cpu", "device", "git_sha", "torch", "cuda", "resrepro", "python")


def made_by(runs: Iterable[Any]) -> list[dict[str, Any]]:
    """Each distinct origin (KEYS) of the finished ``runs``, with how many runs and the dates they finished."""
    seen: dict[tuple[str, ...], dict[str, Any]] = {}
    for run in runs:
        p = (run.summary or {}).get("provenance") if run.finished else None
        if not isinstance(p, dict):
            continue
        key = tuple(str(p.get(k) or "—") for k in KEYS)
        entry = seen.setdefault(key, dict(zip(KEYS, key, strict=True)) | {"runs": 0, "dates": []})
        entry["runs"] += 1
        if isinstance(p.get("date"), str):
            entry["dates"].append(p["date"][:10])
    return [e | {"dates": sorted(set(e["dates"]))} for e in seen.values()]


def sweep_command(name: str, scale: str, runs_root: str | Path | None) -> str:
    """The one command that trains what an artefact lacks and renders it."""
    runs = "" if runs_root is None or Path(runs_root) == Path("runs") else f" --runs {runs_root}"
    return f"resrepro sweep {name} --scale {scale}{runs}"


def artefact_provenance(runs: list[Any], name: str, scale: str, runs_root: str | Path) -> dict[str, Any]:
    """``provenance.json``: the command that remakes the artefact, this render (date, command, commit), and
    each origin its runs recorded."""
    return {"command": sweep_command(name, scale, runs_root), "rendered": rendered(), "runs": len(runs),
            "finished": sum(r.finished for r in runs), "made_by": made_by(runs)}


def rendered() -> dict[str, Any]:
    """This render: when, by which command, at which commit."""
    from resrepro.train.provenance import command, git_sha

    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command(),
            "git_sha": git_sha()}


def machine(entry: dict[str, Any]) -> str:
    """"AMD EPYC 7B13 (x86_64 (2 threads))", or a GPU's name with the CPU beside it."""
    cpu, device = entry.get("cpu", "—"), entry.get("device", "—")
    return device if cpu == "—" else f"{cpu}; {device}"


def made_by_lines(made: list[dict[str, Any]]) -> list[str]:
    """Markdown: where the runs were made, one line per origin; a warning line when there are several."""
    if not made:
        return []
    lines = []
    for m in made:
        when = " to ".join(dict.fromkeys([m["dates"][0], m["dates"][-1]])) if m["dates"] else "date not recorded"
        lines.append(f"Runs made on: {machine(m)}; torch {m['torch']}; commit `{m['git_sha'][:12]}`; {when} "
                     f"({m['runs']} run{'s' * (m['runs'] != 1)}).")
    if len(made) > 1:
        lines.append(f"**These runs come from {len(made)} different machines or commits**: another CPU or library "
                     "build changes a run's outcome, so differences between them may be the machine's, not the "
                     "net's.")
    return lines
