"""A sweep's runs as a Slurm job array through submitit: one array task per run, on one rank or several (DDP).

Preemption and time limits lose nothing: the trainer checkpoints on Slurm's signal and the task is requeued,
then resumes from that checkpoint; the sweep waits for every task until it ends with a result or leaves the queue.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import submitit.helpers

from resrepro.errors import ResreproError
from resrepro.sweep.jobs import BY_ANOTHER, Report, TrainFn, attempt, done_line
from resrepro.train.rundir import RunDir
from resrepro.train.spec import RunSpec

if TYPE_CHECKING:
    from resrepro.sweep.plan import PlanItem

# Requeues after a time limit before a task counts as failed (submitit's max_num_timeout, 3 by default): each one
# resumes from a checkpoint written at the signal, so a run longer than the partition's limit needs as many as it
# takes; the bound only ends a run that cannot reach its next iteration within a time limit.
MAX_REQUEUES = 100
POLL_S = 5.0  # seconds between two looks at the queue: one squeue call for the whole array
GRACE_S = 30.0  # how long a task out of the queue without a result is waited for (unless cancelled)
# Slurm states in which a task may still write its result: waiting, running, requeued or preempted (and requeued
# next, under PreemptMode=REQUEUE), ending.
LIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "CONFIGURING", "COMPLETING",
        "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm resources for each run of a job array (``resrepro sweep --executor slurm``)."""

    partition: str | None = None  # None: the cluster's default partition
    time_min: int = 24 * 60  # a run that outlives it is checkpointed, requeued, and resumes
    gpus_per_job: int = 1
    cpus_per_job: int = 8  # for the whole run, shared by its ranks
    array_parallelism: int = 64  # at most this many runs of the array at once
    folder: Path | None = None  # submitit's logs and pickles; default <runs>/.submitit/<group>-<scale>
    ranks_per_job: int | None = None  # processes per run (DDP ranks); None: one per GPU, at least one

    @property
    def ranks(self) -> int:
        return self.ranks_per_job or max(self.gpus_per_job, 1)

    def check(self) -> None:
        if self.gpus_per_job and self.ranks != self.gpus_per_job:
            raise ResreproError(f"--ranks-per-job {self.ranks_per_job} with --gpus-per-job {self.gpus_per_job}: a "
                                "run on GPUs has one rank per GPU; --ranks-per-job is for CPU runs (--gpus-per-job 0)")
        if self.cpus_per_job < self.ranks:
            raise ResreproError(f"--cpus-per-job {self.cpus_per_job} is less than one CPU for each of the run's "
                                f"{self.ranks} ranks")


class TrainJob(submitit.helpers.Checkpointable):
    """One Slurm array task: its run, trained by each of the task's ranks, then evaluated by rank 0.

    SIGTERM (preemption, ``scontrol requeue``, ``scancel``): the trainer saves a checkpoint and the task ends
    without a result; Slurm has requeued it (or cancelled it, which the sweep reports). SIGUSR2 (the time limit
    ahead): the trainer saves a checkpoint, then submitit's handler requeues the task with this same call
    (``checkpoint()``). The requeued task resumes from the checkpoint."""

    def __init__(self, train_fn: TrainFn) -> None:
        self.train_fn = train_fn

    def __call__(self, spec: RunSpec, run_dir: Path, evals: tuple[str, ...]) -> str | None:
        # Errors come back as values: submitit's debug executor opens pdb on an exception.
        if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":  # the debug executor: this process, Ctrl-C stops it
            return attempt(self.train_fn, spec, run_dir, evals)
        env = submitit.JobEnvironment()
        world, rank = env.num_tasks, env.global_rank
        if world > 1:
            from resrepro.train.loop import init_distributed

            ranks = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                                          overwrite=True)
            spec = spec.replace(device=init_distributed(ranks.local_rank, spec.device))
        try:
            outcome = attempt(self.train_fn, spec, run_dir, evals if world == 1 else ())
        except Exception as e:  # only an interruption leaves attempt: a signal, each rank's checkpoint saved
            _leave(e, spec.device, world, rank)
        finally:
            if world > 1:
                import torch.distributed as dist

                dist.destroy_process_group()
        if world > 1 and rank == 0 and evals and (outcome is None or outcome.startswith(BY_ANOTHER)):
            # Evaluated by rank 0 alone, once the others have left: an evaluation sums over the process group if
            # there is one, and would wait for them.
            outcome = attempt(self.train_fn, spec, run_dir, evals) or outcome
        return outcome


def _leave(stop: Exception, device: str, world: int, rank: int) -> NoReturn:
    """End an interrupted task without a result, so that the sweep keeps waiting for it; requeue it first if
    Slurm warned of its time limit."""
    warned = getattr(stop, "signal", None) == signal.SIGUSR2
    if world > 1:  # every rank the same answer, once rank 0 has written the checkpoint (it saves, then raises)
        import torch
        import torch.distributed as dist

        flag = torch.tensor(float(warned), device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        warned = bool(flag.item())
    why = ("time limit ahead (SIGUSR2): the task is requeued" if warned else
           "preempted, requeued or cancelled (SIGTERM)")
    print(f"{stop} [{why}; a requeued task resumes from this checkpoint]", file=sys.stderr, flush=True)
    if warned and rank == 0:
        # Back to submitit's own handler (the trainer's is gone): it calls checkpoint(), which pickles this same
        # call again, runs `scontrol requeue` for this task and exits. Its count of requeues after a time limit
        # ends, past MAX_REQUEUES, in a result that says so.
        signal.raise_signal(signal.SIGUSR2)
    raise SystemExit(1)


def slurm_array(todo: list[PlanItem], cluster: str, opts: SlurmOptions, folder: Path, train_fn: TrainFn,
                report: Report) -> dict[Path, str | None]:
    """Submit one array task per run and wait for all of them; a run's outcome as ``attempt`` gives it."""
    import submitit

    opts.check()
    with _quiet_submitit():
        try:
            executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster, slurm_max_num_timeout=MAX_REQUEUES)
        except RuntimeError as e:  # no srun/sbatch here: a user error, not a crash
            raise ResreproError(f"cannot use --executor {cluster}: {e}") from None
        params: dict[str, Any] = {
            "name": "resrepro", "timeout_min": opts.time_min, "gpus_per_node": opts.gpus_per_job,
            "tasks_per_node": opts.ranks, "cpus_per_task": opts.cpus_per_job // opts.ranks,
            "slurm_array_parallelism": opts.array_parallelism,
        }
        if opts.partition:
            params["slurm_partition"] = opts.partition
        executor.update_parameters(**params)
        try:
            jobs = executor.map_array(TrainJob(train_fn), [i.run.spec for i in todo], [i.run_dir for i in todo],
                                      [i.evals for i in todo])
        except Exception as e:  # sbatch refused (unknown partition, limits): its message says why
            raise ResreproError(f"could not submit the job array: {str(e).strip()}") from None
        array_id = jobs[0].job_id.split("_")[0]
        report(f"submitted {len(jobs)} runs as {cluster} job array {array_id}; logs in {folder}")
        try:
            if cluster == "debug":  # in this process, one after the other
                return _in_order(todo, jobs, report)
            return _wait(todo, jobs, array_id, report)
        except KeyboardInterrupt:
            raise ResreproError(
                f"stopped waiting; job array {array_id} keeps running (scancel {array_id} stops it). "
                "Sweep again only after it ends: a sweep now would train its unfinished runs twice at once"
            ) from None


@contextmanager
def _quiet_submitit() -> Iterator[None]:
    """The sweep's own lines only: submitit logs a warning at each poll where sacct fails (a cluster without
    accounting) and warns of what it cannot read. Each task's log keeps its own submitit lines."""
    logger = logging.getLogger("submitit")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="submitit")
            yield
    finally:
        logger.setLevel(level)


def _in_order(todo: list[PlanItem], jobs: list, report: Report) -> dict[Path, str | None]:
    outcomes: dict[Path, str | None] = {}
    for k, (item, job) in enumerate(zip(todo, jobs, strict=True), 1):
        outcomes[item.run_dir] = _outcome(item, job)
        report(done_line(k, len(todo), item.run_dir, outcomes[item.run_dir]))
    return outcomes


def _wait(todo: list[PlanItem], jobs: list, array_id: str, report: Report) -> dict[Path, str | None]:
    """Each run's outcome as its task ends, in the order they end. A task is over when rank 0 has written its
    result, or when it has left Slurm's queue without one (cancelled, killed); one requeued (preempted, timed out)
    is still in the queue and is waited for. The queue is read with squeue, which a cluster without accounting
    (no sacct, submitit's way) has too."""
    outcomes: dict[Path, str | None] = {}
    waiting = dict(zip((job.job_id for job in jobs), zip(todo, jobs, strict=True), strict=True))
    left: dict[str, float] = {}  # when a task was first seen out of the queue without a result
    while waiting:
        states = _states(array_id)
        for job_id, (item, job) in list(waiting.items()):
            state = states.get(job_id) if states is not None else None
            if job.task(0).paths.result_pickle.exists():
                outcome = _outcome(item, job)
            elif states is None or state in LIVE:  # squeue could not say, or still queued
                left.pop(job_id, None)
                continue
            # Out of the queue: its result may still be on its way through a shared file system, or the task be
            # on its way back (a requeue after a node failure passes through ended states); not once cancelled.
            elif state == "CANCELLED" or time.monotonic() - left.setdefault(job_id, time.monotonic()) > GRACE_S:
                outcome = _vanished(item, job, state)
            else:
                continue
            del waiting[job_id]
            outcomes[item.run_dir] = outcome
            report(done_line(len(outcomes), len(todo), item.run_dir, outcome))
        if waiting:
            time.sleep(POLL_S)
    return outcomes


def _states(array_id: str) -> dict[str, str] | None:
    """Each task of the array still known to Slurm, and its state (None if squeue could not say)."""
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--jobs", array_id,
                              "--format=%i %T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:  # slurmctld busy or restarting; a task that ended long ago is no error of squeue
        return {} if "Invalid job id" in out.stderr else None
    return dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) >= 2)


def _outcome(item: PlanItem, job: Any) -> str | None:
    """What rank 0's result says; a run is done only when its summary.json is there."""
    try:
        outcome = job.task(0).result()
    except Exception as e:  # the job itself failed (node failure, out of memory, too many time limits)
        last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        return f"{item.run_dir}: job {job.job_id} failed: {last}"
    if outcome is None and not RunDir(item.run_dir).is_finished():
        return f"{item.run_dir}: job {job.job_id} ended without the run's summary.json; see {job.paths.stderr}"
    return outcome


def _vanished(item: PlanItem, job: Any, state: str | None) -> str:
    """A task that left the queue without a result: what Slurm said of it, and what is kept."""
    how = f"was {state.lower()}" if state else "left the queue"
    kept = "its checkpoint is kept, sweep again to resume" if RunDir(item.run_dir).checkpoint.exists() else \
        "it had no checkpoint yet"
    return f"{item.run_dir}: job {job.job_id} {how} before the run finished ({kept}); log: {job.task(0).paths.stderr}"
