"""The Slurm launch's settings, checked before anything is submitted (the cluster itself: tests/slurm)."""

from __future__ import annotations

import pytest

from tests.inprocess import in_process_cli


@pytest.mark.parametrize("args, message", [
    (("--gpus-per-job", "2", "--ranks-per-job", "4"),
     "--ranks-per-job 4 with --gpus-per-job 2: a run on GPUs has one rank per GPU; --ranks-per-job is for CPU runs "
     "(--gpus-per-job 0)"),
    (("--gpus-per-job", "0", "--ranks-per-job", "4", "--cpus-per-job", "2"),
     "--cpus-per-job 2 is less than one CPU for each of the run's 4 ranks"),
])
def test_ranks_that_cannot_be_placed_are_one_line_before_anything_is_submitted(args, message, tmp_path, monkeypatch,
                                                                               capsys):
    code, _, err = in_process_cli(monkeypatch, capsys, "sweep", "fig1", "--scale", "tiny", "--runs",
                                  str(tmp_path / "runs"), "--executor", "slurm", *args)
    assert code == 2 and err.strip() == f"error: {message}" and not (tmp_path / "runs").exists()
