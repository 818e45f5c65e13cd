"""A sweep's plan: where each run of an experiment stands in the runs folder (finished, to evaluate, partial,
todo, running elsewhere, conflict), the evaluations it lacks, and how long it has left to train."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from resrepro.errors import ResreproError
from resrepro.experiments import Experiment, PlannedRun
from resrepro.sweep.estimate import Estimator
from resrepro.train.evaluate import evaluated
from resrepro.train.families import family_of
from resrepro.train.rundir import RunDir


@dataclass(frozen=True)
class PlanItem:
    """A planned run and where it stands: finished | evaluate (trained, lacks an evaluation) | partial |
    todo | running (another process holds its directory: left to it) | conflict."""

    run: PlannedRun
    run_dir: Path
    status: str
    done_iters: int = 0  # the last logged iteration of a partial run
    images_per_s: float | None = None  # estimated: see ``source``
    source: str = ""  # where images_per_s comes from: runs, bench or FLOPs (resrepro.sweep.estimate)
    device: str = ""  # the device images_per_s holds for, and its type (cuda | cpu; "" if not recorded)
    device_type: str = ""
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


def plan(experiment: Experiment, runs_root: str | Path, *, estimate: Estimator | None = None) -> list[PlanItem]:
    """Where each run of the experiment stands in ``runs_root``, with a time estimate that names its source
    (``estimate``: default, finished runs under ``runs_root``, then bench results, then FLOPs)."""
    runs_root = Path(runs_root)
    estimate = estimate or Estimator(runs_root)
    protocols = evaluations(experiment)
    return [_status(_located(run, runs_root), runs_root / run.run_dir_rel, estimate, protocols)
            for run in experiment.runs]


def _located(run: PlannedRun, runs_root: Path) -> PlannedRun:
    """A run whose upstream run (a detector's backbone_run) is relative to the runs root, as experiments name it,
    made usable."""
    spec, field = run.spec, family_of(run.spec).upstream
    upstream = getattr(spec, field) if field else None
    if upstream and not Path(upstream).is_absolute():
        return dataclasses.replace(run, spec=spec.replace(**{field: str(runs_root / upstream)}))
    return run


def evaluations(experiment: Experiment) -> tuple[str, ...]:
    """The protocols whose results the experiment's tables read (ImageNet's test protocols, detection's mAP), none
    without runs of a family that keeps evaluations."""
    if not any(family_of(r.spec).keeps_eval for r in experiment.runs):
        return ()
    from resrepro.report.tables import table_names, table_protocols

    tables = [entry.split(":", 1)[1] for entry in experiment.renders if entry.startswith("table:")]
    return tuple(dict.fromkeys(p for t in tables if t in table_names() for p in table_protocols(t)))


def _status(run: PlannedRun, run_dir: Path, estimate: Estimator, protocols: tuple[str, ...]) -> PlanItem:
    item = _where(run, run_dir, protocols)
    if item.status in ("todo", "partial"):
        speed = estimate(run.spec)
        if speed is not None:
            return dataclasses.replace(item, images_per_s=speed.images_per_s, source=speed.source,
                                       device=speed.device, device_type=speed.device_type)
    return item


def _where(run: PlannedRun, run_dir: Path, protocols: tuple[str, ...]) -> PlanItem:
    evals = tuple(p for p in family_of(run.spec).evaluations(protocols) if not evaluated(run_dir, p))
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
