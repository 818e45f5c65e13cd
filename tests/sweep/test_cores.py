"""A sweep on a CPU: its runs side by side, one worker process per core, each with its share of the threads, and
each giving the bits it gives trained alone with as many threads."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from resrepro.experiments import load_experiment
from resrepro.sweep import run_sweep
from resrepro.sweep.jobs import Slot, cpu_slots
from resrepro.train.checkpoint import load_checkpoint
from resrepro.train.loop import train

TINY = {"dataset": "synthetic", "width": 4, "batch_size": 32, "iters": 24, "milestones": [12, 18], "eval_every": 12,
        "eval_batch_size": 250}


@pytest.mark.parametrize(("cores", "parallel", "slots"), [
    (8, None, [Slot(threads=1)] * 8),  # the default: one one-thread run per core
    (8, 2, [Slot(threads=4)] * 2),
    (8, 3, [Slot(threads=2)] * 3),
    (2, 4, [Slot(threads=1)] * 4),  # more runs than cores: asked for, so given
])
def test_the_cores_are_shared_out_by_parallel_alone(monkeypatch, cores, parallel, slots):
    monkeypatch.setattr("resrepro.sweep.jobs.cpu_cores", lambda: cores)
    assert cpu_slots(parallel) == slots


def side_by_side_train(spec, run_dir: Path) -> dict:
    """The trainer, once every run of the sweep has started (a minute at most): the test fails unless the sweep
    trains them at the same time. Notes the threads its worker was given."""
    from resrepro.sweep.jobs import train_any

    run_dir.parent.mkdir(parents=True, exist_ok=True)  # beside the run: a file in it would be no run's
    run_dir.with_name(run_dir.name + ".threads").write_text(str(torch.get_num_threads()))
    deadline = time.monotonic() + 60
    while len(list(run_dir.parent.glob("*.threads"))) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the other run did not start while this one waited")
        time.sleep(0.05)
    return train_any(spec, run_dir)


def _experiment(tmp_path: Path):
    toml = tmp_path / "two.toml"
    toml.write_text('title = "two"\n[defaults]\n' + "".join(
        f"{k} = {v!r}\n".replace("'", '"') for k, v in TINY.items()) + '[[runs]]\nmodels = ["resnet8", "plain8"]\n')
    return load_experiment(toml)


def test_two_cpu_slots_train_two_runs_at_once_to_the_bits_of_each_trained_alone_with_one_thread(tmp_path,
                                                                                                monkeypatch):
    monkeypatch.setattr("resrepro.sweep.jobs.gpu_count", lambda: 0)  # a CPU sweep, even on a GPU machine
    monkeypatch.setattr("resrepro.sweep.jobs.cpu_cores", lambda: 2)  # two slots of one thread, whatever the CPU
    exp = _experiment(tmp_path)
    messages: list[str] = []
    result = run_sweep(exp, tmp_path / "runs", parallel=None, train_fn=side_by_side_train, render=False,
                       report=messages.append)
    assert not result.failed and len(result.trained) == 2
    assert messages[0] == "2 runs on this CPU, 2 at a time, each a worker process of 1 thread(s)"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for run in exp.runs:
            swept = tmp_path / "runs" / run.run_dir_rel
            assert swept.with_name(swept.name + ".threads").read_text() == "1"
            alone = train(run.spec, tmp_path / "alone" / run.name)
            assert alone["final"] == train(run.spec, swept)["final"]  # the swept run's summary, not retrained
            a, b = load_checkpoint(tmp_path / "alone" / run.name), load_checkpoint(swept)
            assert a["cpu_threads"] == b["cpu_threads"] == 1
            assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    finally:
        torch.set_num_threads(threads)


def test_parallel_1_trains_in_this_process_and_0_is_refused(tmp_path, monkeypatch):
    from resrepro.errors import ResreproError

    monkeypatch.setattr("resrepro.sweep.jobs.gpu_count", lambda: 0)
    exp = _experiment(tmp_path)
    calls: list[str] = []
    result = run_sweep(exp, tmp_path / "runs", parallel=1, render=False,
                       train_fn=lambda spec, run_dir: calls.append(spec.model))  # unpicklable: in this process
    assert calls == ["resnet8", "plain8"] and not result.failed
    with pytest.raises(ResreproError, match="--parallel 0: train at least one run at a time"):
        run_sweep(exp, tmp_path / "runs", parallel=0, render=False)
