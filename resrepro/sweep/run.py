"""Run a sweep: train and evaluate what the plan says an experiment lacks, wave by wave through an executor of
:mod:`resrepro.sweep.jobs`, then render its tables and figures."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

from resrepro.errors import ResreproError
from resrepro.experiments import Experiment
from resrepro.report.render import render_experiment
from resrepro.sweep.jobs import (
    BY_ANOTHER,
    IN_USE,
    Report,
    TrainFn,
    check_gpus,
    gpu_groups,
    in_process,
    on_cores,
    per_core,
    per_gpu,
    train_any,
)
from resrepro.sweep.plan import PlanItem, plan
from resrepro.sweep.slurm import SlurmOptions, slurm_array
from resrepro.train.evaluate import eval_path
from resrepro.train.families import family_of
from resrepro.train.rundir import check_locks
from resrepro.train.spec import RunSpec

EXECUTORS = ("local", "slurm", "debug")  # debug: submitit's in-process executor (the Slurm path, no cluster)


@dataclass
class SweepResult:
    plan: list[PlanItem]
    trained: list[Path] = field(default_factory=list)
    evaluated: list[Path] = field(default_factory=list)  # the eval/<protocol>.json files written
    failed: dict[Path, str] = field(default_factory=dict)  # run dir -> what went wrong
    rendered: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[Path]:
        """The runs trained before this sweep (some may now have been evaluated)."""
        return [i.run_dir for i in self.plan if i.status in ("finished", "evaluate")]


def run_sweep(
    experiment: Experiment,
    runs_root: str | Path,
    *,
    executor: str = "local",
    gpus: list[int] | None = None,
    gpus_per_run: int = 1,
    parallel: int | None = 1,
    slurm: SlurmOptions | None = None,
    out_dir: str | Path | None = None,
    train_fn: TrainFn | None = None,
    progress: bool = False,
    report: Report | None = None,
    render: bool = True,
    force: bool = False,
) -> SweepResult:
    """Train and evaluate what the experiment lacks, then render it into ``out_dir`` (default
    results/<name>/<scale>).

    ``gpus_per_run``: locally, each run trains on that many of ``gpus`` as one rank per GPU (DDP; the run's BN
    groups, and so its result, are those of one GPU).
    ``parallel``: locally on a machine without a GPU (no ``gpus``), how many runs train at once, each a worker
    process with its share of the cores (None: one one-thread run per core); 1: one at a time in this process.
    ``train_fn(spec, run_dir)`` defaults to the trainer of the spec's family; it must be a module-level
    function (it is pickled for worker processes and Slurm). Evaluations run in the same job, after it. A
    failing run is recorded in ``failed`` and the others go on. A run another process is training (a second
    sweep, a `resrepro train`) is neither trained nor failed: it is left to that process and named in
    ``warnings`` (nothing went wrong, but what is rendered lacks it until a later sweep). ``report`` receives
    one-line progress messages. ``render=False`` only trains and evaluates. An artefact built from fewer runs than
    the one in ``out_dir`` goes to ``out_dir/partial`` (named in ``warnings``) unless ``force``.
    """
    if executor not in EXECUTORS:
        raise ResreproError(f"unknown executor {executor!r}: choose {', '.join(EXECUTORS)}")
    if executor == "local" and gpus:
        check_gpus(gpus)
        gpu_groups(gpus, gpus_per_run)
    elif gpus_per_run != 1:
        raise ResreproError("--gpus-per-run is for the local executor with --gpus (Slurm: --gpus-per-job)")
    if parallel is not None and parallel < 1:
        raise ResreproError(f"--parallel {parallel}: train at least one run at a time")
    report = report or (lambda _: None)
    runs_root = Path(runs_root)
    result = SweepResult(plan(experiment, runs_root))
    for item in result.plan:
        if item.status == "conflict":
            result.failed[item.run_dir] = item.note
        elif item.status == "running":
            result.warnings.append(item.note)
    todo = [i for i in result.plan if i.status in ("todo", "partial", "evaluate")]
    if todo:
        check_locks(runs_root)  # one line for a file system without locks, not one failure per run
        cores = executor == "local" and on_cores(gpus, parallel)
        # Progress here, in each Slurm job's log, and from workers as plain lines into a shared log; but not as
        # bars from several workers drawing over each other on one terminal.
        workers = executor == "local" and (gpus or cores)
        train_fn = train_fn or _default_train(progress and not (workers and sys.stderr.isatty()), gpus_per_run)
        outcomes: dict[Path, str | None] = {}
        for wave in _waves(todo):
            if cores:
                outcomes |= per_core(wave, parallel, train_fn, report)
            elif executor == "local" and not gpus:
                outcomes |= in_process(wave, train_fn, report)
            elif executor == "local":
                outcomes |= per_gpu(wave, gpus, train_fn, report, gpus_per_run)
            else:
                slurm = slurm or SlurmOptions()
                folder = slurm.folder or runs_root / ".submitit" / f"{experiment.group}-{experiment.scale}"
                outcomes |= slurm_array(wave, executor, slurm, folder, train_fn, report)
        for item in todo:
            error = outcomes[item.run_dir]
            if error is not None and error.startswith((IN_USE, BY_ANOTHER)):
                result.warnings.append(error)
            elif error is not None:
                result.failed[item.run_dir] = error
            elif item.status != "evaluate":
                result.trained.append(item.run_dir)
            result.evaluated += [eval_path(item.run_dir, p) for p in item.evals
                                 if eval_path(item.run_dir, p).exists()]
    if render:
        out = Path(out_dir) if out_dir is not None else results_dir(experiment)
        result.rendered, warnings = render_experiment(experiment, runs_root, out, force=force)
        result.warnings += warnings
    return result


def _waves(todo: list[PlanItem]) -> list[list[PlanItem]]:
    """The runs to train, those whose upstream run is among them last: every executor trains a backbone before
    the detector that starts from it (which, if the backbone failed, fails saying so)."""
    training = {i.run_dir.resolve() for i in todo if i.status != "evaluate"}
    later = [i for i in todo if (upstream := _upstream(i.run.spec)) and Path(upstream).resolve() in training]
    return [wave for wave in ([i for i in todo if i not in later], later) if wave]


def _upstream(spec: RunSpec) -> str | None:
    """The run directory a run starts from (its family's ``upstream`` field), if any."""
    field = family_of(spec).upstream
    return getattr(spec, field) if field else None


def results_dir(experiment: Experiment) -> Path:
    """Where a sweep renders an experiment's tables and figures unless told: results/<name>/<scale>."""
    return Path("results") / experiment.name / experiment.scale


def _default_train(progress: bool, ranks: int = 1) -> TrainFn:
    return functools.partial(train_any, progress=progress, ranks=ranks)
