"""Train every run an experiment still lacks, then render its tables and figures.

Runs go one at a time in this process, one worker process per GPU (``gpus=[0, 1]``), or as a Slurm job
array through submitit. A run directory is the state: finished runs are skipped, interrupted ones resumed
(the trainer resumes from its checkpoint), so running a sweep twice trains nothing the second time.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit.helpers

from resrepro.errors import ResreproError
from resrepro.experiments import Experiment, PlannedRun
from resrepro.train.imagenet_spec import ImageNetSpec
from resrepro.train.rundir import CONFIG, SUMMARY, RunDir
from resrepro.train.spec import RunSpec

Spec = RunSpec | ImageNetSpec
TrainFn = Callable[[Spec, Path], Any]  # resrepro.train.loop.train's shape: (spec, run_dir) -> summary
Report = Callable[[str], None]
EXECUTORS = ("local", "slurm", "debug")  # debug: submitit's in-process executor (the Slurm path, no cluster)


@dataclass(frozen=True)
class PlanItem:
    """A planned run and where it stands: finished | partial | todo | conflict."""

    run: PlannedRun
    run_dir: Path
    status: str
    done_iters: int = 0  # the last logged iteration of a partial run
    images_per_s: float | None = None  # measured on a run of the same model, dataset and width
    note: str = ""

    @property
    def gpu_hours(self) -> float | None:
        """Estimated time still to train: remaining iterations × batch / measured images per second."""
        if self.status in ("finished", "conflict"):
            return 0.0 if self.status == "finished" else None
        if not self.images_per_s:
            return None
        remaining = max(self.run.spec.iters - self.done_iters, 0)
        return remaining * self.run.spec.batch_size / self.images_per_s / 3600


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm resources for each run of a job array (``resrepro sweep --executor slurm``)."""

    partition: str | None = None  # None: the cluster's default partition
    time_min: int = 24 * 60  # a run that outlives it is requeued and resumes from its checkpoint
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    array_parallelism: int = 64  # at most this many runs of the array at once
    folder: Path | None = None  # submitit's logs and pickles; default <runs>/.submitit/<group>-<scale>


@dataclass
class SweepResult:
    plan: list[PlanItem]
    trained: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)  # run dir -> what went wrong
    rendered: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[Path]:
        return [i.run_dir for i in self.plan if i.status == "finished"]


def plan(experiment: Experiment, runs_root: str | Path) -> list[PlanItem]:
    """Where each run of the experiment stands in ``runs_root``, with a measured time estimate."""
    runs_root = Path(runs_root)
    speeds = measured_speeds(runs_root)
    return [_status(run, runs_root / run.run_dir_rel, speeds) for run in experiment.runs]


def _status(run: PlannedRun, run_dir: Path, speeds: dict[tuple, float]) -> PlanItem:
    speed = speeds.get(_speed_key(run.spec.to_dict()))
    rd = RunDir(run_dir)
    if not (run_dir / CONFIG).exists() and not rd.checkpoint.exists():
        return PlanItem(run, run_dir, "todo", images_per_s=speed)
    if (run_dir / CONFIG).exists():
        stored = _stored_hash(rd.read_config())
        if stored != run.spec.config_hash():
            note = (f"{run_dir} holds another configuration (hash {stored}, the experiment wants "
                    f"{run.spec.config_hash()}): move it away or sweep into another --runs folder")
            return PlanItem(run, run_dir, "conflict", note=note)
    if rd.is_finished():
        return PlanItem(run, run_dir, "finished", images_per_s=speed)
    done = max((int(r["iter"]) for r in rd.read_metrics() if isinstance(r.get("iter"), int)), default=0)
    return PlanItem(run, run_dir, "partial", done_iters=done, images_per_s=speed)


def _stored_hash(config: dict[str, Any]) -> str | None:
    if config.get("family") == "imagenet":
        # Recomputed, not read: a run written before a setting existed (scale, crop) ran with its default.
        try:
            return ImageNetSpec.from_dict(config).config_hash()
        except (ResreproError, TypeError):
            return None
    if "config_hash" in config:
        return config["config_hash"]
    try:
        known = {k: v for k, v in config.items() if k in RunSpec.__dataclass_fields__}
        return RunSpec.from_dict(known).config_hash()
    except (ResreproError, TypeError):
        return None


def _speed_key(config: dict[str, Any]) -> tuple:
    # Throughput depends on the net, the image size and the width; a tiny CPU run says nothing about a
    # full GPU run, so only runs that agree on all three inform an estimate.
    return config.get("model"), config.get("dataset"), config.get("width")


def measured_speeds(runs_root: Path) -> dict[tuple, float]:
    """Training images per second of every finished run under ``runs_root``, by (model, dataset, width)."""
    speeds: dict[tuple, float] = {}
    for summary in sorted(runs_root.rglob(SUMMARY)) if runs_root.is_dir() else []:
        try:
            rd = RunDir(summary.parent)
            s, config = rd.read_summary() or {}, rd.read_config()
        except ResreproError:
            continue  # a damaged run directory informs no estimate
        if s.get("status") == "finished" and isinstance(s.get("images_per_s"), int | float):
            speeds.setdefault(_speed_key(config), float(s["images_per_s"]))
    return speeds


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
    """Train what the experiment lacks, then render it into ``out_dir`` (default results/<name>/<scale>).

    ``train_fn(spec, run_dir)`` defaults to :func:`resrepro.train.loop.train`; it must be a module-level
    function (it is pickled for worker processes and Slurm). A failing run is recorded in ``failed`` and
    the others go on. ``report`` receives one-line progress messages. ``render=False`` only trains.
    """
    if executor not in EXECUTORS:
        raise ResreproError(f"unknown executor {executor!r}: choose {', '.join(EXECUTORS)}")
    report = report or (lambda _: None)
    runs_root = Path(runs_root)
    result = SweepResult(plan(experiment, runs_root))
    for item in result.plan:
        if item.status == "conflict":
            result.failed[item.run_dir] = item.note
    todo = [i for i in result.plan if i.status in ("todo", "partial")]
    if todo:
        train_fn = train_fn or _default_train(progress and executor == "local" and not gpus)
        if executor == "local" and not gpus:
            outcomes = _in_process(todo, train_fn, report)
        elif executor == "local":
            outcomes = _per_gpu(todo, gpus, train_fn, report)
        else:
            slurm = slurm or SlurmOptions()
            folder = slurm.folder or runs_root / ".submitit" / f"{experiment.group}-{experiment.scale}"
            outcomes = _submitit(todo, executor, slurm, folder, train_fn, report)
        for run_dir, error in outcomes.items():
            if error is None:
                result.trained.append(run_dir)
            else:
                result.failed[run_dir] = error
    if render:
        out = Path(out_dir) if out_dir is not None else Path("results") / experiment.name / experiment.scale
        result.rendered, warnings = render_experiment(experiment, runs_root, out)
        result.warnings += warnings
    return result


def _default_train(progress: bool) -> TrainFn:
    return functools.partial(_train_any, progress=progress)


def _train_any(spec: Spec, run_dir: Path, *, progress: bool = False) -> Any:
    """The trainer of the spec's family (module-level, so worker processes and Slurm can unpickle it)."""
    if isinstance(spec, ImageNetSpec):
        from resrepro.train.imagenet import train_imagenet

        return train_imagenet(spec, run_dir, progress=progress)
    from resrepro.train.loop import train

    return train(spec, run_dir, progress=progress)


def _attempt(train_fn: TrainFn, spec: Spec, run_dir: Path) -> str | None:
    """Train one run; return None, or a one-line error naming the run directory. Raises only on Ctrl-C."""
    try:
        train_fn(spec, run_dir)
    except Exception as e:  # a failed run is reported and must not stop the others...
        if _interrupted(e):  # ...but Ctrl-C (which the trainer turns into an exception) stops the sweep
            raise
        return f"{run_dir}: {e}" if isinstance(e, ResreproError) else f"{run_dir}: {type(e).__name__}: {e}"
    return None


def _interrupted(e: Exception) -> bool:
    loop = sys.modules.get("resrepro.train.loop")  # loaded if a real training ran; it imports torch
    return loop is not None and isinstance(e, loop.TrainingInterrupted)


def _done(k: int, n: int, run_dir: Path, error: str | None) -> str:
    return f"[{k}/{n}] " + (f"failed {error}" if error else f"done {run_dir}")


def _in_process(todo: list[PlanItem], train_fn: TrainFn, report: Report) -> dict[Path, str | None]:
    outcomes = {}
    for k, item in enumerate(todo, 1):
        verb = "resuming" if item.status == "partial" else "training"
        report(f"[{k}/{len(todo)}] {verb} {item.run_dir}")
        outcomes[item.run_dir] = _attempt(train_fn, item.run.spec, item.run_dir)
        report(_done(k, len(todo), item.run_dir, outcomes[item.run_dir]))
    return outcomes


def _claim_gpu(free_gpus: Any) -> None:
    # Each worker takes one GPU for its lifetime; it is spawned (not forked), so CUDA is not initialised
    # yet when CUDA_VISIBLE_DEVICES is set.
    os.environ["CUDA_VISIBLE_DEVICES"] = str(free_gpus.get())


def _per_gpu(todo: list[PlanItem], gpus: list[int], train_fn: TrainFn,
             report: Report) -> dict[Path, str | None]:
    ctx = multiprocessing.get_context("spawn")
    free_gpus = ctx.Queue()
    for g in gpus:
        free_gpus.put(g)
    report(f"{len(todo)} runs on GPUs {','.join(map(str, gpus))}, one worker process per GPU")
    outcomes: dict[Path, str | None] = {}
    pool = ProcessPoolExecutor(len(gpus), mp_context=ctx, initializer=_claim_gpu, initargs=(free_gpus,))
    futures = {pool.submit(_attempt, train_fn, i.run.spec, i.run_dir): i.run_dir for i in todo}
    try:
        for k, future in enumerate(as_completed(futures), 1):
            run_dir = futures[future]
            try:
                outcomes[run_dir] = future.result()
            except Exception as e:  # the worker process died (killed, out of memory): others go on
                outcomes[run_dir] = f"{run_dir}: worker process failed: {type(e).__name__}: {e}"
            report(_done(k, len(todo), run_dir, outcomes[run_dir]))
    finally:  # on Ctrl-C, start no queued run (running ones get the signal too, checkpoint and stop)
        pool.shutdown(wait=True, cancel_futures=True)
    return outcomes


class TrainJob(submitit.helpers.Checkpointable):
    """One Slurm array task. On timeout or preemption submitit requeues it with the same arguments, and
    the trainer resumes from the run's last checkpoint."""

    def __init__(self, train_fn: TrainFn) -> None:
        self.train_fn = train_fn

    def __call__(self, spec: Spec, run_dir: Path) -> str | None:
        # Errors come back as values: submitit's debug executor opens pdb on an exception.
        return _attempt(self.train_fn, spec, run_dir)


def _submitit(todo: list[PlanItem], cluster: str, opts: SlurmOptions, folder: Path, train_fn: TrainFn,
              report: Report) -> dict[Path, str | None]:
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    except RuntimeError as e:  # no srun/sbatch here: a user error, not a crash
        raise ResreproError(f"cannot use --executor {cluster}: {e}") from None
    params: dict[str, Any] = {
        "name": "resrepro", "timeout_min": opts.time_min, "gpus_per_node": opts.gpus_per_job,
        "cpus_per_task": opts.cpus_per_job, "slurm_array_parallelism": opts.array_parallelism,
    }
    if opts.partition:
        params["slurm_partition"] = opts.partition
    executor.update_parameters(**params)
    try:
        jobs = executor.map_array(TrainJob(train_fn), [i.run.spec for i in todo], [i.run_dir for i in todo])
    except Exception as e:  # sbatch refused (unknown partition, limits): its message says why
        raise ResreproError(f"could not submit the job array: {str(e).strip()}") from None
    array_id = jobs[0].job_id.split("_")[0]
    report(f"submitted {len(jobs)} runs as {cluster} job array {array_id}; logs in {folder}")
    outcomes: dict[Path, str | None] = {}
    for k, (item, job) in enumerate(zip(todo, jobs, strict=True), 1):
        try:
            outcomes[item.run_dir] = job.result()
        except KeyboardInterrupt:
            raise ResreproError(
                f"stopped waiting; job array {array_id} keeps running (scancel {array_id} stops it). "
                "Sweep again only after it ends: a sweep now would train its unfinished runs twice at once"
            ) from None
        except Exception as e:  # the job itself failed (node failure, out of memory, cancelled)
            last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            outcomes[item.run_dir] = f"{item.run_dir}: job {job.job_id} failed: {last}"
        report(_done(k, len(todo), item.run_dir, outcomes[item.run_dir]))
    return outcomes


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
