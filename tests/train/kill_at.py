"""Train a run that kills itself at a chosen moment, for tests/train/test_runs.py:

    python -m tests.train.kill_at RUN_DIR SPEC_JSON POINT STEP

POINT: config (SIGKILL once config.json is written), step (after optimizer step STEP), metrics (once
metrics.csv holds iteration STEP, before its checkpoint), checkpoint (halfway through writing the checkpoint
of iteration STEP), summary (the last checkpoint written, summary.json not), sigterm (SIGTERM after step STEP:
the trainer saves and stops; exit 3). Exit 0 means the point was never reached. The hooks are patched in
here, so the product carries none.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys

import torch

import resrepro.train.checkpoint as checkpoint
import resrepro.train.loop as loop
from resrepro.io import atomic_write
from resrepro.train.rundir import RunDir
from resrepro.train.spec import spec_from_config


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after_step(step: int, then) -> None:
    original = loop._Loop._train_step

    def train_step(self):
        result = original(self)
        if self.step == step:
            then()
        return result

    loop._Loop._train_step = train_step


def patch(point: str, step: int) -> None:
    if point == "config":
        write_config = RunDir.write_config
        RunDir.write_config = lambda self, config: (write_config(self, config), die())
    elif point == "step":
        after_step(step, die)
    elif point == "sigterm":
        after_step(step, lambda: os.kill(os.getpid(), signal.SIGTERM))
    elif point == "metrics":
        write_metrics = RunDir.write_metrics
        RunDir.write_metrics = lambda self, rows: (write_metrics(self, rows), rows[-1]["iter"] == step and die())
    elif point == "checkpoint":
        save = loop.save_checkpoint

        def save_half(path, state):
            if state["step"] != step:
                return save(path, state)
            buf = io.BytesIO()
            torch.save({"format": checkpoint.FORMAT, **state}, buf)

            def half(f):
                f.write(buf.getbuffer()[: buf.tell() // 2])
                f.flush()
                os.fsync(f.fileno())
                die()

            atomic_write(path, half)

        loop.save_checkpoint = save_half
    elif point == "summary":
        RunDir.write_summary = lambda self, summary: die()
    else:
        raise SystemExit(f"unknown point {point}")


if __name__ == "__main__":
    run_dir, spec_json, point, step = sys.argv[1:]
    patch(point, int(step))
    try:
        loop.train(spec_from_config(json.loads(spec_json)), run_dir)
    except loop.TrainingInterrupted:
        sys.exit(3)
