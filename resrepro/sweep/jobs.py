"""Where a sweep's runs go: one at a time in this process, one worker process per GPU, or a Slurm job array
through submitit. Each job trains its run unless finished, then runs the evaluations its tables need."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit.helpers

from resrepro.errors import ResreproError
from resrepro.train.rundir import RunDir
from resrepro.train.spec import RunSpec

if TYPE_CHECKING:
    from resrepro.sweep.plan import PlanItem

TrainFn = Callable[[RunSpec, Path], Any]  # resrepro.train.loop.train's shape: (spec, run_dir) -> summary
Report = Callable[[str], None]


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm resources for each run of a job array (``resrepro sweep --executor slurm``)."""

    partition: str | None = None  # None: the cluster's default partition
    time_min: int = 24 * 60  # a run that outlives it is requeued and resumes from its checkpoint
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    array_parallelism: int = 64  # at most this many runs of the array at once
    folder: Path | None = None  # submitit's logs and pickles; default <runs>/.submitit/<group>-<scale>



def train_any(spec: RunSpec, run_dir: Path, *, progress: bool = False) -> Any:
    """The one trainer, for a spec of any family (module-level, so worker processes and Slurm can unpickle it)."""
    from resrepro.train.loop import train

    return train(spec, run_dir, progress=progress)


# An outcome that starts so is no failure: another process (a second sweep planned at the same moment, a
# `resrepro train`) took the run first, and it is left to that process.
IN_USE = "in use, left to its holder: "
# Nor this: another process held the run when this one came to it, and finished it while this one waited.
BY_ANOTHER = "trained by another sweep: "


def _attempt(train_fn: TrainFn, spec: RunSpec, run_dir: Path, evals: tuple[str, ...] = ()) -> str | None:
    """Train one run unless it has finished, then evaluate it under each protocol of ``evals`` it lacks;
    return None, or a one-line error naming the run directory (IN_USE first if another process holds it).
    Raises only on Ctrl-C."""
    from resrepro.train.rundir import RunInUse

    theirs = False
    try:
        if not RunDir(run_dir).is_finished():
            theirs = RunDir(run_dir).holder() is not None  # if it is finished by the time we hold it, not by us
            train_fn(spec, run_dir)
        for protocol in evals:
            _evaluate(spec, run_dir, protocol)
    except RunInUse as e:
        return IN_USE + " ".join(str(e).split())
    except Exception as e:  # a failed run is reported and must not stop the others...
        if _interrupted(e):  # ...but Ctrl-C (which the trainer turns into an exception) stops the sweep
            raise
        why = str(e) if isinstance(e, ResreproError) else f"{type(e).__name__}: {e}"
        return f"{run_dir}: {' '.join(why.split())}"  # one line, however many the exception's message has
    return BY_ANOTHER + str(run_dir) if theirs else None


def _evaluate(spec: RunSpec, run_dir: Path, protocol: str) -> None:
    """RUN/eval/<protocol>.json (and a classifier's probabilities), as `resrepro eval RUN --<protocol>` writes it,
    unless it is there already."""
    from resrepro.train.evaluate import evaluate_run, evaluated

    if not evaluated(run_dir, protocol):
        try:
            evaluate_run(run_dir, protocol=protocol, device=spec.device)
        except ResreproError as e:
            raise ResreproError(f"{protocol} evaluation: {e}") from None


def _interrupted(e: Exception) -> bool:
    loop = sys.modules.get("resrepro.train.loop")  # loaded if a real training ran; it imports torch
    return loop is not None and isinstance(e, loop.TrainingInterrupted)


def _done(k: int, n: int, run_dir: Path, error: str | None) -> str:
    if error and error.startswith((IN_USE, BY_ANOTHER)):
        return f"[{k}/{n}] skipped {run_dir}: {error}"
    return f"[{k}/{n}] " + (f"failed {error}" if error else f"done {run_dir}")


def _verb(item: PlanItem) -> str:
    verb = {"partial": "resuming", "evaluate": "evaluating"}.get(item.status, "training")
    if item.evals and item.status != "evaluate":
        verb += ", then evaluating"
    return verb + (f" ({', '.join(item.evals)})" if item.evals else "")


def _left(done: list[PlanItem], todo: list[PlanItem], seconds: float) -> str:
    """The sweep's time to go at its pace so far, after the runs ``done``: each run weighs its planned GPU-hours
    (its iterations to go if any run has no estimate), so a ResNet-110 after a plain-20 is not taken as quick."""
    hours = [i.gpu_hours for i in done + todo]
    weights = hours if None not in hours else [max(i.run.spec.iters - i.done_iters, 0) for i in done + todo]
    past, ahead = sum(weights[:len(done)]), sum(weights[len(done):])
    if not (past and seconds):
        return ""
    m, s = divmod(round(seconds * ahead / past), 60)
    return f" (sweep: about {m // 60}:{m % 60:02d}:{s:02d} to go)"


def in_process(todo: list[PlanItem], train_fn: TrainFn, report: Report) -> dict[Path, str | None]:
    outcomes, start = {}, time.monotonic()
    for k, item in enumerate(todo, 1):
        left = _left(todo[:k - 1], todo[k - 1:], time.monotonic() - start)
        report(f"[{k}/{len(todo)}] {_verb(item)} {item.run_dir}{left}")
        outcomes[item.run_dir] = _attempt(train_fn, item.run.spec, item.run_dir, item.evals)
        report(_done(k, len(todo), item.run_dir, outcomes[item.run_dir]))
    return outcomes


class SweepStopped(ResreproError):
    """SIGTERM to a sweep with worker processes: each checkpointed its run and stopped."""


def gpu_count() -> int:
    """The GPUs this process sees (CUDA_VISIBLE_DEVICES applies): what ``--gpus`` indexes."""
    import torch

    return torch.cuda.device_count()


def check_gpus(gpus: list[int]) -> None:
    """Refuse a GPU this machine lacks: its worker would not fail, it would train on the CPU."""
    count = gpu_count()
    missing = [str(g) for g in gpus if not 0 <= g < count]
    if missing:
        have = f"GPUs 0..{count - 1}" if count else "no CUDA GPU"
        raise ResreproError(f"--gpus {','.join(map(str, gpus))}: no GPU {', '.join(missing)} here (this machine "
                            f"has {have})")


_WORKER: dict[str, Any] = {}  # in a worker process: its GPU, the queue it goes back to, the sweep's stop event


def _start_worker(free_gpus: Any, stop: Any, pids: Any, parent: int) -> None:
    # Spawned, not forked: CUDA is not initialised yet when CUDA_VISIBLE_DEVICES is set.
    gpu = free_gpus.get()
    _WORKER.update(gpu=gpu, free_gpus=free_gpus, stop=stop)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # --gpus counts the GPUs the sweep sees, as torch does
    os.environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[gpu] if visible else str(gpu)
    pids.put(os.getpid())
    if sys.platform.startswith("linux"):
        # The kernel sends SIGTERM when the sweep's process dies, even by SIGKILL, which no handler sees: the
        # worker then checkpoints and stops instead of training on as an orphan. prctl has no Python binding.
        import ctypes

        pr_set_pdeathsig = 1  # <linux/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the sweep died before prctl took effect
        os._exit(1)


def _attempt_on_gpu(train_fn: TrainFn, spec: RunSpec, run_dir: Path, evals: tuple[str, ...]) -> str | None:
    try:
        if _WORKER["stop"].is_set():  # a run already handed to the pool when the sweep was stopped
            return f"{run_dir}: not started, the sweep was stopped"
        return _attempt(train_fn, spec, run_dir, evals)
    finally:
        _WORKER["free_gpus"].put(_WORKER["gpu"])


@contextmanager
def _sigterm_stops_sweep() -> Iterator[None]:
    """SIGTERM (Slurm, systemd, kill) stops the sweep like Ctrl-C, instead of killing it and leaving its
    workers to train on as orphans."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread can set handlers
        yield
        return

    def stop(signum, frame):
        raise SweepStopped("sweep stopped by SIGTERM: the runs in progress were checkpointed; sweep again to "
                           "resume them")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def per_gpu(todo: list[PlanItem], gpus: list[int], train_fn: TrainFn,
             report: Report) -> dict[Path, str | None]:
    ctx = multiprocessing.get_context("spawn")
    free_gpus, stop, pids = ctx.Queue(), ctx.Event(), ctx.Queue()
    for g in gpus:
        free_gpus.put(g)
    report(f"{len(todo)} runs on GPUs {','.join(map(str, gpus))}, one worker process per GPU")
    outcomes: dict[Path, str | None] = {}
    # One run per worker process: the pool hands out runs ahead, and a worker that outlived its run's stop
    # would start the next one.
    pool = ProcessPoolExecutor(len(gpus), mp_context=ctx, initializer=_start_worker, max_tasks_per_child=1,
                               initargs=(free_gpus, stop, pids, os.getpid()))
    futures = {pool.submit(_attempt_on_gpu, train_fn, i.run.spec, i.run_dir, i.evals): i.run_dir for i in todo}
    try:
        with _sigterm_stops_sweep():
            for k, future in enumerate(as_completed(futures), 1):
                run_dir = futures[future]
                try:
                    outcomes[run_dir] = future.result()
                except Exception as e:  # the worker process died (killed, out of memory): others go on
                    outcomes[run_dir] = f"{run_dir}: worker process failed: {type(e).__name__}: {e}"
                report(_done(k, len(todo), run_dir, outcomes[run_dir]))
    except BaseException:  # Ctrl-C or SIGTERM: every worker checkpoints its run and stops, none starts another
        stop.set()
        _terminate_workers(pids)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return outcomes


def _terminate_workers(pids: Any) -> None:
    """SIGTERM, which the trainer turns into a checkpoint and a stop, to each live worker (Ctrl-C in a terminal
    reached them already; SIGTERM to the sweep did not)."""
    started = set()
    with suppress(queue.Empty):
        while True:  # each worker put its pid when it started; a short wait lets the last ones arrive
            started.add(pids.get(timeout=0.2))
    for worker in multiprocessing.active_children():  # live children only: a pid is never someone else's
        if worker.pid in started:
            worker.terminate()


class TrainJob(submitit.helpers.Checkpointable):
    """One Slurm array task. On timeout or preemption submitit requeues it with the same arguments, and
    the trainer resumes from the run's last checkpoint."""

    def __init__(self, train_fn: TrainFn) -> None:
        self.train_fn = train_fn

    def __call__(self, spec: RunSpec, run_dir: Path, evals: tuple[str, ...]) -> str | None:
        # Errors come back as values: submitit's debug executor opens pdb on an exception.
        return _attempt(self.train_fn, spec, run_dir, evals)


def slurm_array(todo: list[PlanItem], cluster: str, opts: SlurmOptions, folder: Path, train_fn: TrainFn,
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
        jobs = executor.map_array(TrainJob(train_fn), [i.run.spec for i in todo], [i.run_dir for i in todo],
                                  [i.evals for i in todo])
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
