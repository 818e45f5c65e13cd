"""Where a sweep's runs go: one at a time in this process, or worker processes — one per GPU, or on a CPU one
per core — (a Slurm job array: :mod:`resrepro.sweep.slurm`). Each job trains its run unless finished, then runs the
evaluations its tables need."""

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

from resrepro.errors import ResreproError
from resrepro.train.rundir import RunDir
from resrepro.train.spec import RunSpec

if TYPE_CHECKING:
    from resrepro.sweep.plan import PlanItem

TrainFn = Callable[[RunSpec, Path], Any]  # resrepro.train.loop.train's shape: (spec, run_dir) -> summary
Report = Callable[[str], None]


def train_any(spec: RunSpec, run_dir: Path, *, progress: bool = False, ranks: int = 1) -> Any:
    """The one trainer, for a spec of any family (module-level, so worker processes and Slurm can unpickle it);
    ``ranks`` > 1: as that many processes here, one per GPU the process sees (DDP, the run's BN groups kept)."""
    from resrepro.train.launch import train_ranks

    return train_ranks(spec, run_dir, ranks, progress=progress)


# An outcome that starts so is no failure: another process (a second sweep planned at the same moment, a
# `resrepro train`) took the run first, and it is left to that process.
IN_USE = "in use, left to its holder: "
# Nor this: another process held the run when this one came to it, and finished it while this one waited.
BY_ANOTHER = "trained by another sweep: "


def attempt(train_fn: TrainFn, spec: RunSpec, run_dir: Path, evals: tuple[str, ...] = ()) -> str | None:
    """Train one run unless it has finished, then evaluate it under each protocol of ``evals`` it lacks;
    return None, or a one-line error naming the run directory (IN_USE first if another process holds it).
    Raises only when a signal stopped the trainer, its checkpoint saved: Ctrl-C, or Slurm's SIGTERM or SIGUSR2."""
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
        if _interrupted(e):  # ...but a stop signal (the trainer turns it into an exception) is for the caller
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


def done_line(k: int, n: int, run_dir: Path, error: str | None) -> str:
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
        outcomes[item.run_dir] = attempt(train_fn, item.run.spec, item.run_dir, item.evals)
        report(done_line(k, len(todo), item.run_dir, outcomes[item.run_dir]))
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


@dataclass(frozen=True)
class Slot:
    """What one worker process trains on: some GPUs (the worker sees those alone), or, with none, this many of
    the CPU's threads."""

    gpus: tuple[int, ...] = ()
    threads: int = 0


def cpu_cores() -> int:
    """The cores this process may run on (taskset and cgroup CPU sets apply)."""
    with suppress(AttributeError):  # not on macOS
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def on_cores(gpus: list[int] | None, parallel: int | None) -> bool:
    """Whether a local sweep trains side by side on this CPU: no ``--gpus``, no GPU here, and not ``--parallel 1``
    (one run at a time in the sweep's own process)."""
    return not gpus and parallel != 1 and gpu_count() == 0


def cpu_slots(parallel: int | None) -> list[Slot]:
    """``parallel`` runs at a time on this CPU (None: one per core), the cores shared out between them. Tiny nets
    use one core badly: two tiny ResNet-20 runs of 300 iterations took 16.3-17.3 s one after the other with two
    threads each, and 10.0 s side by side with one thread each (idle 2-core EPYC). The threads per run depend on
    ``parallel`` and the cores alone, never on how many runs a sweep has: a run's thread count changes its float
    results, and the same run must give the same bits in any sweep."""
    cores = cpu_cores()
    parallel = parallel or cores
    return [Slot(threads=max(1, cores // parallel))] * parallel


_WORKER: dict[str, Any] = {}  # in a worker process: its slot, the queue it goes back to, the sweep's stop event


def _start_worker(free_slots: Any, stop: Any, pids: Any, parent: int) -> None:
    # Spawned, not forked: CUDA is not initialised yet when CUDA_VISIBLE_DEVICES is set.
    slot = free_slots.get()
    _WORKER.update(slot=slot, free_slots=free_slots, stop=stop)
    if slot.gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # --gpus counts the GPUs the sweep sees, as torch does
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(visible.split(",")[g] if visible else str(g) for g in slot.gpus)
    else:  # before torch starts its thread pools, and for the libraries it loads
        os.environ["OMP_NUM_THREADS"] = str(slot.threads)
    pids.put(os.getpid())
    if sys.platform.startswith("linux"):
        # The kernel sends SIGTERM when the sweep's process dies, even by SIGKILL, which no handler sees: the
        # worker then checkpoints and stops instead of training on as an orphan. prctl has no Python binding.
        import ctypes

        pr_set_pdeathsig = 1  # <linux/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the sweep died before prctl took effect
        os._exit(1)


def _attempt_in_worker(train_fn: TrainFn, spec: RunSpec, run_dir: Path, evals: tuple[str, ...]) -> str | None:
    try:
        if _WORKER["stop"].is_set():  # a run already handed to the pool when the sweep was stopped
            return f"{run_dir}: not started, the sweep was stopped"
        if _WORKER["slot"].threads:
            import torch

            torch.set_num_threads(_WORKER["slot"].threads)
        return attempt(train_fn, spec, run_dir, evals)
    finally:
        _WORKER["free_slots"].put(_WORKER["slot"])


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


def gpu_groups(gpus: list[int], per_run: int) -> list[tuple[int, ...]]:
    """``--gpus`` taken ``per_run`` at a time, one group per run in training; refused unless they share out."""
    if per_run < 1 or len(gpus) % per_run:
        raise ResreproError(f"--gpus-per-run {per_run} must divide the {len(gpus)} GPU(s) of --gpus "
                            f"{','.join(map(str, gpus))}")
    return [tuple(gpus[i:i + per_run]) for i in range(0, len(gpus), per_run)]


def in_workers(todo: list[PlanItem], slots: list[Slot], train_fn: TrainFn, report: Report) -> dict[Path, str | None]:
    """Each run in a worker process of its own, on one of ``slots`` (its GPUs, or its CPU threads), as many at
    once as there are slots. Ctrl-C or SIGTERM: every worker checkpoints its run and stops, and none starts
    another."""
    ctx = multiprocessing.get_context("spawn")
    free_slots, stop, pids = ctx.Queue(), ctx.Event(), ctx.Queue()
    slots = slots[:len(todo)]  # no more workers than runs
    for slot in slots:
        free_slots.put(slot)
    outcomes: dict[Path, str | None] = {}
    # One run per worker process: the pool hands out runs ahead, and a worker that outlived its run's stop
    # would start the next one.
    pool = ProcessPoolExecutor(len(slots), mp_context=ctx, initializer=_start_worker, max_tasks_per_child=1,
                               initargs=(free_slots, stop, pids, os.getpid()))
    futures = {pool.submit(_attempt_in_worker, train_fn, i.run.spec, i.run_dir, i.evals): i.run_dir for i in todo}
    try:
        with _sigterm_stops_sweep():
            for k, future in enumerate(as_completed(futures), 1):
                run_dir = futures[future]
                try:
                    outcomes[run_dir] = future.result()
                except Exception as e:  # the worker process died (killed, out of memory): others go on
                    outcomes[run_dir] = f"{run_dir}: worker process failed: {type(e).__name__}: {e}"
                report(done_line(k, len(todo), run_dir, outcomes[run_dir]))
    except BaseException:  # Ctrl-C or SIGTERM: every worker checkpoints its run and stops, none starts another
        stop.set()
        _terminate_workers(pids)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return outcomes


def per_gpu(todo: list[PlanItem], gpus: list[int], train_fn: TrainFn,
            report: Report, per_run: int = 1) -> dict[Path, str | None]:
    """Each run on ``per_run`` of ``gpus`` (its worker sees those alone; ``train_fn`` starts a rank on each)."""
    slots = [Slot(gpus=group) for group in gpu_groups(gpus, per_run)]
    each = "one worker process per GPU" if per_run == 1 else f"{per_run} GPUs (one rank each) per run"
    report(f"{len(todo)} runs on GPUs {','.join(map(str, gpus))}, {each}")
    return in_workers(todo, slots, train_fn, report)


def per_core(todo: list[PlanItem], parallel: int | None, train_fn: TrainFn, report: Report) -> dict[Path, str | None]:
    """``parallel`` runs at a time on this CPU (None: one per core), each a worker process with its share of the
    cores (:func:`cpu_slots`)."""
    slots = cpu_slots(parallel)
    report(f"{len(todo)} runs on this CPU, {len(slots)} at a time, each a worker process of {slots[0].threads} "
           f"thread(s)")
    return in_workers(todo, slots, train_fn, report)


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
