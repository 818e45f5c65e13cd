"""A run killed mid-training, as the resume tests need it: the process dies right after logging an iteration,
before that iteration's checkpoint is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from resrepro.train.loop import train
from resrepro.train.spec import RunSpec


class Killed(Exception):
    pass


def train_until_killed(spec: RunSpec, run_dir: str | Path, at: int) -> None:
    """Train ``spec`` into ``run_dir`` and die right after iteration ``at`` is logged."""

    def die(step: int, row: dict) -> None:
        if step == at:
            raise Killed

    with pytest.raises(Killed):
        train(spec, run_dir, on_step=die)
