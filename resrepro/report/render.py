"""An experiment's tables (Markdown) and figures rendered from its run directories, as `resrepro sweep` and
`resrepro report` write them. Each renderer is imported only when an experiment renders something of its
kind: they pull in matplotlib and, for Table 5, torch."""

from __future__ import annotations

from pathlib import Path

from resrepro.errors import ResreproError
from resrepro.experiments import Experiment
from resrepro.io import write_json, write_text
from resrepro.report.keep import destination
from resrepro.report.provenance import PROVENANCE, artefact_provenance


def render_experiment(experiment: Experiment, runs_root: str | Path,
                      out_dir: str | Path, *, force: bool = False) -> tuple[list[Path], list[str]]:
    """Render the experiment's tables (Markdown) and figures from its run directories into ``out_dir``; one
    built from fewer runs than the one it would replace goes to ``out_dir/partial`` instead, unless ``force``.
    Beside what it wrote, ``provenance.json`` records what made it."""
    runs_dir, out_dir = Path(runs_root) / experiment.runs_dir_rel, Path(out_dir)
    paths: list[Path] = []
    warnings: list[str] = []
    for entry in experiment.renders:
        kind, name = entry.split(":", 1)
        try:
            if kind == "table":
                from resrepro.report.tables import render_table_files

                files, notes = render_table_files(name, runs_dir=runs_dir, dataset=experiment.dataset)
                folder, kept = destination(out_dir, name, files[f"{name}.md"], force=force)
                for file, text in files.items():  # the table, then its claims' verdicts
                    write_text(folder / file, text)
                    paths.append(folder / file)
                notes += kept
            else:
                from resrepro.report.figures import render_figure

                files, notes = render_figure(name, runs_dir, out_dir, dataset=experiment.dataset, force=force)
                paths += files
            warnings += [f"{entry}: {n}" for n in notes]
        except ResreproError as e:  # e.g. nothing to render yet: the sweep still reports its runs
            warnings.append(f"{entry}: {e}")
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("resrepro.report"):
                raise
            warnings.append(f"{entry}: its renderer ({e.name}) is not built yet")
    runs = _runs_of(experiment, runs_dir) if paths else []
    if runs:
        record = artefact_provenance(runs, experiment.name, experiment.scale, runs_root)
        for where in dict.fromkeys(p.parent for p in paths):  # partial/ too, where the renderer put them there
            write_json(where / PROVENANCE, record)
            paths.append(where / PROVENANCE)
    return paths, warnings


def _runs_of(experiment: Experiment, runs_dir: Path) -> list:
    """The runs under ``runs_dir`` of the experiment's nets (its artefacts' runs, and maybe other settings')."""
    from resrepro.analysis.aggregate import find_runs

    models = {r.model for r in experiment.runs}
    return [r for r in find_runs(runs_dir)[0] if r.model in models] if runs_dir.is_dir() else []
