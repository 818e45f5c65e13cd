"""One run as several processes on this machine (DDP): what ``resrepro train --ranks N`` and a sweep's
``--gpus-per-run N`` start. The ranks meet through the env:// rendezvous on a free local port, as torchrun's do;
rank r trains on cuda:r of the GPUs this process sees (gloo on a CPU)."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from resrepro.errors import ResreproError
from resrepro.train.spec import RunSpec

# After one rank has failed, how long the others have to fail too (their next collective) before they are killed.
GRACE_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, spec: RunSpec, run_dir: Path, progress: bool, outcomes: Any) -> None:
    if sys.platform.startswith("linux"):
        # SIGTERM when the launching process dies, even by SIGKILL: the rank checkpoints and stops instead of
        # training on as an orphan. prctl has no Python binding.
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    import torch
    import torch.distributed as dist

    from resrepro.train.loop import init_distributed, train

    if "OMP_NUM_THREADS" not in os.environ:  # the machine's cores shared out, not each rank taking them all
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))

    try:
        spec = spec.replace(device=init_distributed(rank, spec.device))
        try:
            outcomes.put((rank, train(spec, run_dir, progress=progress and rank == 0), None))
        finally:
            dist.destroy_process_group()
    except Exception as e:  # sent back whole (its type says what it was: Diverged, TrainingInterrupted, ...)
        outcomes.put((rank, None, e if isinstance(e, ResreproError) else ResreproError(f"{type(e).__name__}: {e}")))


def train_ranks(spec: RunSpec, run_dir: str | Path, ranks: int, *, progress: bool = False) -> dict[str, Any]:
    """Train ``spec`` into ``run_dir`` as ``ranks`` processes; return rank 0's summary, or raise the error of the
    first rank that failed (rank 0's if it did). A signal to this process (SIGTERM, Ctrl-C) goes to every rank,
    which checkpoint and stop together."""
    if ranks == 1:
        from resrepro.train.loop import train

        return train(spec, run_dir, progress=progress)
    ctx = multiprocessing.get_context("spawn")  # CUDA is never initialised in a forked child
    outcomes = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank, args=(r, ranks, port, spec, Path(run_dir), progress, outcomes))
             for r in range(ranks)]

    def forward(signum, frame):
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                os.kill(p.pid, signum)

    main = threading.current_thread() is threading.main_thread()  # only the main thread can set handlers
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    results: dict[int, tuple[Any, BaseException | None]] = {}
    try:
        for p in procs:
            p.start()
        failed_at = None
        while len(results) < ranks and (failed_at is None or time.monotonic() - failed_at < GRACE_S):
            try:
                rank, summary, error = outcomes.get(timeout=0.5)
                results[rank] = (summary, error)
            except queue.Empty:
                for r, p in enumerate(procs):
                    if p.exitcode not in (None, 0) and r not in results:  # died without a word (killed, no memory)
                        results[r] = (None, ResreproError(f"rank {r} of {ranks} died (exit code {p.exitcode})"))
            if failed_at is None and any(error is not None for _, error in results.values()):
                failed_at = time.monotonic()
    finally:
        for p in (p for p in procs if p.pid is not None):  # those blocked in a collective after the grace: killed
            p.join(timeout=10 if len(results) == ranks else 0)
            if p.exitcode is None:
                p.kill()
                p.join()
        for s, h in previous.items():
            signal.signal(s, h)
    errors = [results[r][1] for r in sorted(results) if results[r][1] is not None]
    if 0 in results and results[0][1] is not None:
        raise results[0][1]
    if errors:
        raise errors[0]
    if 0 not in results:
        raise ResreproError(f"rank 0 of {ranks} stopped answering within {GRACE_S} s of another rank's failure")
    return results[0][0]
