"""A CPU run's thread count is part of what it computes: a resumed run goes on with the one it started with."""

from __future__ import annotations

import pytest
import torch

from resrepro.train.checkpoint import load_checkpoint
from resrepro.train.loop import train
from resrepro.train.spec import CifarSpec
from tests.train.killed import train_until_killed

SPEC = CifarSpec(model="resnet8", dataset="synthetic", width=4, batch_size=32, iters=24, milestones=(12, 18),
                 eval_every=6, eval_batch_size=250, checkpoint_every=6, device="cpu")


@pytest.fixture
def threads():
    """Set the process's thread count; put back after the test."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_a_run_resumed_with_other_threads_goes_on_with_its_own_to_the_uninterrupted_bits(tmp_path, threads, capsys):
    threads(2)
    full = train(SPEC, tmp_path / "full")
    train_until_killed(SPEC, tmp_path / "cut", at=12)  # its checkpoint is iteration 6's
    assert load_checkpoint(tmp_path / "cut")["cpu_threads"] == 2
    threads(1)
    one = train(SPEC, tmp_path / "one")
    if one["final"] == full["final"]:
        pytest.skip("this CPU computes the same bits on 1 and 2 threads: nothing to keep")
    capsys.readouterr()
    resumed = train(SPEC, tmp_path / "cut")
    assert resumed["final"] == full["final"]
    assert "with the 2 CPU thread(s) it started with (this process has 1)" in capsys.readouterr().err
    assert torch.get_num_threads() == 1  # the process's own count is back
    assert load_checkpoint(tmp_path / "cut")["cpu_threads"] == 2
