"""Train every run an experiment still lacks, evaluate it as its tables need, then render them.

A run directory is the state: finished runs are skipped, interrupted ones resumed (the trainer resumes from
its checkpoint), so running a sweep twice trains nothing the second time; a run another process is training
(two sweeps at once) is left to it. An ImageNet run is then evaluated,
where it trained, under each test protocol its tables report (Tables 2-3: 10-crop, Table 4: multi-scale)
that its eval/ folder still lacks; a detection run likewise under its tables' mAP protocols. A detection run
whose ImageNet backbone the sweep also trains starts after it (a second wave). Where runs go (here, one worker
per GPU, Slurm) is :mod:`resrepro.sweep_jobs`.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

from resrepro.errors import ResreproError
from resrepro.experiments import Experiment, PlannedRun
from resrepro.sweep_jobs import (
    BY_ANOTHER,
    IN_USE,
    Report,
    SlurmOptions,
    TrainFn,
    check_gpus,
    in_process,
    per_gpu,
    slurm_array,
    train_any,
)
from resrepro.throughput import Estimator
from resrepro.train.evaluate import DETECTION_PROTOCOLS, eval_path
from resrepro.train.rundir import RunDir
from resrepro.train.spec import DetectionSpec, ImageNetSpec

EXECUTORS = ("local", "slurm", "debug")  # debug: submitit's in-process executor (the Slurm path, no cluster)


@dataclass(frozen=True)
class PlanItem:
    """A planned run and where it stands: finished | evaluate (trained, lacks an evaluation) | partial |
    todo | running (another process holds its directory: left to it) | conflict."""

    run: PlannedRun
    run_dir: Path
    status: str
    done_iters: int = 0  # the last logged iteration of a partial run
    images_per_s: float | None = None  # estimated: see ``source``
    source: str = ""  # where images_per_s comes from: runs, bench or FLOPs (resrepro.throughput)
    note: str = ""
    evals: tuple[str, ...] = ()  # test protocols to run after training: not yet in RUN/eval/

    @property
    def gpu_hours(self) -> float | None:
        """Estimated time still to train: remaining iterations × batch / estimated images per second."""
        if self.status in ("finished", "evaluate", "conflict", "running"):
            return 0.0 if self.status in ("finished", "evaluate") else None
        if not self.images_per_s:
            return None
        remaining = max(self.run.spec.iters - self.done_iters, 0)
        return remaining * self.run.spec.batch_size / self.images_per_s / 3600


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


def plan(experiment: Experiment, runs_root: str | Path, *, estimate: Estimator | None = None) -> list[PlanItem]:
    """Where each run of the experiment stands in ``runs_root``, with a time estimate that names its source
    (``estimate``: default, finished runs under ``runs_root``, then bench results, then FLOPs)."""
    runs_root = Path(runs_root)
    estimate = estimate or Estimator(runs_root)
    protocols = evaluations(experiment)
    return [_status(_located(run, runs_root), runs_root / run.run_dir_rel, estimate, protocols)
            for run in experiment.runs]


def _located(run: PlannedRun, runs_root: Path) -> PlannedRun:
    """A detection run whose backbone_run is relative to the runs root (as experiments name it), made usable."""
    spec = run.spec
    if isinstance(spec, DetectionSpec) and spec.backbone_run and not Path(spec.backbone_run).is_absolute():
        return dataclasses.replace(run, spec=spec.replace(backbone_run=str(runs_root / spec.backbone_run)))
    return run


def evaluations(experiment: Experiment) -> tuple[str, ...]:
    """The ImageNet test protocols and detection mAP protocols whose results the experiment's tables read (none
    without ImageNet or detection runs)."""
    if not any(isinstance(r.spec, ImageNetSpec | DetectionSpec) for r in experiment.runs):
        return ()
    from resrepro.report.tables import table_names, table_protocols

    tables = [entry.split(":", 1)[1] for entry in experiment.renders if entry.startswith("table:")]
    return tuple(dict.fromkeys(p for t in tables if t in table_names() for p in table_protocols(t)))


def _status(run: PlannedRun, run_dir: Path, estimate: Estimator, protocols: tuple[str, ...]) -> PlanItem:
    item = _where(run, run_dir, protocols)
    if item.status in ("todo", "partial"):
        speed = estimate(run.spec)
        if speed is not None:
            return dataclasses.replace(item, images_per_s=speed.images_per_s, source=speed.source)
    return item


def _where(run: PlannedRun, run_dir: Path, protocols: tuple[str, ...]) -> PlanItem:
    detection = isinstance(run.spec, DetectionSpec)  # mAP protocols for detection runs, the others for ImageNet's
    evals = tuple(p for p in protocols if (p in DETECTION_PROTOCOLS) == detection
                  and not eval_path(run_dir, p).exists()) if isinstance(run.spec, ImageNetSpec | DetectionSpec) else ()
    rd = RunDir(run_dir)
    held = rd.holding(run.spec)
    if held == "held":
        return PlanItem(run, run_dir, "running", evals=evals,
                        note=f"{run_dir} is in use by {rd.holder() or 'another process'}: left to it; sweep again "
                             "after it ends to evaluate and render it")
    if held == "free":  # nothing there, or a run that died before its first checkpoint
        return PlanItem(run, run_dir, "todo", evals=evals)
    if held != "this":
        what = "files that are no resrepro run" if held == "foreign" else "another configuration"
        try:
            rd.read_spec()
        except ResreproError as e:  # not another configuration: a config.json that says nothing usable
            what = f"a damaged run ({e})" if held == "other" else what
        note = (f"{run_dir} holds {what} (the experiment wants hash {run.spec.config_hash()}): move it away or "
                "sweep into another --runs folder")
        return PlanItem(run, run_dir, "conflict", note=note)
    if rd.is_finished():
        return PlanItem(run, run_dir, "evaluate" if evals else "finished", evals=evals)
    try:
        done = max((r["iter"] for r in rd.read_metrics()), default=0)
    except ResreproError as e:  # the trainer would refuse to resume it as well
        return PlanItem(run, run_dir, "conflict", note=f"{e}: move it away to resume the run from its checkpoint")
    return PlanItem(run, run_dir, "partial", done_iters=done, evals=evals)


def run_sweep(
    experiment: Experiment,
    runs_root: str | Path,
    *,
    executor: str = "local",
    gpus: list[int] | None = None,
    slurm: SlurmOptions | None = None,
    out_dir: str | Path | None = None,
    train_fn: TrainFn | None = None,
    progress: bool = False,
    report: Report | None = None,
    render: bool = True,
) -> SweepResult:
    """Train and evaluate what the experiment lacks, then render it into ``out_dir`` (default
    results/<name>/<scale>).

    ``train_fn(spec, run_dir)`` defaults to the trainer of the spec's family; it must be a module-level
    function (it is pickled for worker processes and Slurm). Evaluations run in the same job, after it. A
    failing run is recorded in ``failed`` and the others go on. A run another process is training (a second
    sweep, a `resrepro train`) is neither trained nor failed: it is left to that process and named in
    ``warnings`` (nothing went wrong, but what is rendered lacks it until a later sweep). ``report`` receives
    one-line progress messages. ``render=False`` only trains and evaluates.
    """
    if executor not in EXECUTORS:
        raise ResreproError(f"unknown executor {executor!r}: choose {', '.join(EXECUTORS)}")
    if executor == "local" and gpus:
        check_gpus(gpus)
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
        # Progress here, in each Slurm job's log, and from per-GPU workers as plain lines into a shared log; but
        # not as bars from several workers drawing over each other on one terminal.
        train_fn = train_fn or _default_train(progress and not (executor == "local" and gpus and sys.stderr.isatty()))
        outcomes: dict[Path, str | None] = {}
        for wave in _waves(todo):
            if executor == "local" and not gpus:
                outcomes |= in_process(wave, train_fn, report)
            elif executor == "local":
                outcomes |= per_gpu(wave, gpus, train_fn, report)
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
        result.rendered, warnings = render_experiment(experiment, runs_root, out)
        result.warnings += warnings
    return result


def _waves(todo: list[PlanItem]) -> list[list[PlanItem]]:
    """The runs to train, the detection runs whose backbone is among them last: every executor trains a
    backbone before the detector that starts from it (which, if the backbone failed, fails saying so)."""
    training = {i.run_dir.resolve() for i in todo if i.status != "evaluate"}
    later = [i for i in todo if isinstance(i.run.spec, DetectionSpec) and i.run.spec.backbone_run
             and Path(i.run.spec.backbone_run).resolve() in training]
    return [wave for wave in ([i for i in todo if i not in later], later) if wave]


def results_dir(experiment: Experiment) -> Path:
    """Where a sweep renders an experiment's tables and figures unless told: results/<name>/<scale>."""
    return Path("results") / experiment.name / experiment.scale


def _default_train(progress: bool) -> TrainFn:
    return functools.partial(train_any, progress=progress)


def render_experiment(experiment: Experiment, runs_root: str | Path,
                      out_dir: str | Path) -> tuple[list[Path], list[str]]:
    """Render the experiment's tables (Markdown) and figures from its run directories into ``out_dir``."""
    from resrepro.io import write_text

    runs_dir, out_dir = Path(runs_root) / experiment.runs_dir_rel, Path(out_dir)
    paths: list[Path] = []
    warnings: list[str] = []
    for entry in experiment.renders:
        kind, name = entry.split(":", 1)
        try:
            if kind == "table":
                from resrepro.report.tables import render_table

                text, notes = render_table(name, runs_dir=runs_dir, fmt="markdown",
                                           dataset=experiment.dataset)
                write_text(out_dir / f"{name}.md", text)
                paths.append(out_dir / f"{name}.md")
            else:
                from resrepro.report.figures import render_figure

                files, notes = render_figure(name, runs_dir, out_dir, dataset=experiment.dataset)
                paths += files
            warnings += [f"{entry}: {n}" for n in notes]
        except ResreproError as e:  # e.g. nothing to render yet: the sweep still reports its runs
            warnings.append(f"{entry}: {e}")
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("resrepro.report"):
                raise
            warnings.append(f"{entry}: its renderer ({e.name}) is not built yet")
    return paths, warnings
