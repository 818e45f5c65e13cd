"""resrepro.sweep with a fake trainer: skips finished runs, resumes partial ones, survives failures, and
runs through worker processes and submitit's debug executor."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resrepro.experiments import Experiment, load_experiment
from resrepro.sweep import PlanItem, SlurmOptions, plan, run_sweep
from resrepro.train.rundir import RunDir
from resrepro.train.spec import CifarSpec
from tests.inprocess import in_process_cli

# Module-level trainers: worker processes and submitit pickle them by reference.


def fake_train(spec: CifarSpec, run_dir: Path) -> dict:
    """Leave what a finished run leaves, and count the calls in the run directory."""
    rd = RunDir(run_dir)
    rd.write_config({**spec.to_dict(), "config_hash": spec.config_hash()})
    calls = rd.path / "calls"
    calls.write_text(str(int(calls.read_text()) + 1 if calls.exists() else 1))
    summary = {"status": "finished", "images_per_s": 1000.0, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}
    rd.write_summary(summary)
    return summary


def flaky_train(spec: CifarSpec, run_dir: Path) -> dict:
    if spec.model == "plain20":
        raise RuntimeError("out of luck")
    return fake_train(spec, run_dir)


def stoppable_train(spec: CifarSpec, run_dir: Path) -> dict:
    """Train until SIGTERM/SIGINT as the trainer does (a flag checked each step), then "checkpoint" and raise."""
    from resrepro.train.loop import TrainingInterrupted
    from resrepro.train.runtime import stop_requests

    run_dir.mkdir(parents=True, exist_ok=True)
    with stop_requests() as stop:
        (run_dir / "pid").write_text(str(os.getpid()))
        deadline = time.monotonic() + 60  # a test whose signal never comes must not leave a process behind
        while stop["signal"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
    (run_dir / "stopped").write_text(str(stop["signal"]))
    raise TrainingInterrupted(f"stopped by signal {stop['signal']}")


def backbone_first_train(spec, run_dir: Path) -> dict:
    """A detector refuses to start before its backbone run has finished, as the real one does; it leaves the
    evaluations its table reads."""
    from resrepro.io import write_json
    from resrepro.train.spec import DetectionSpec

    if isinstance(spec, DetectionSpec):
        if not RunDir(spec.backbone_run).is_finished():
            raise RuntimeError(f"backbone {spec.backbone_run} not trained yet")
        for protocol in ("voc07", "voc12"):
            write_json(run_dir / "eval" / f"{protocol}.json", {"map": 0.5})
    return fake_train(spec, run_dir)


def calls(run_dir: Path) -> int:
    return int((run_dir / "calls").read_text()) if (run_dir / "calls").exists() else 0


@pytest.fixture
def no_benches(monkeypatch, tmp_path):
    """No `resrepro bench` results anywhere (not the user's, not the repository's)."""
    monkeypatch.setattr("resrepro.sweep.estimate.BENCH_FOLDERS", (tmp_path / "no-benches",))


@pytest.fixture
def fig1():
    return load_experiment("fig1", "tiny")


def test_second_sweep_trains_nothing(tmp_path, fig1):
    first = run_sweep(fig1, tmp_path, train_fn=fake_train, render=False)
    assert sorted(p.name for p in first.trained) == ["plain20-s0", "plain56-s0"] and not first.failed
    assert all(i.status == "finished" for i in plan(fig1, tmp_path))
    second = run_sweep(fig1, tmp_path, train_fn=fake_train, render=False)
    assert second.trained == [] and len(second.skipped) == 2
    assert [calls(tmp_path / "cifar10/tiny" / n) for n in ("plain20-s0", "plain56-s0")] == [1, 1]


def _partial(run_dir: Path, spec: CifarSpec, at_iter: int) -> None:
    rd = RunDir(run_dir)
    rd.write_config({**spec.to_dict(), "config_hash": spec.config_hash()})
    rd.checkpoint.write_bytes(b"not read by the plan")
    rd.write_metrics([{"iter": at_iter, "eval_error": 0.5}])


def test_partial_run_is_resumed(tmp_path, fig1):
    run = fig1.runs[0]
    _partial(tmp_path / run.run_dir_rel, run.spec, 100)
    items = {i.run.name: i for i in plan(fig1, tmp_path)}
    assert (items[run.name].status, items[run.name].done_iters) == ("partial", 100)
    result = run_sweep(fig1, tmp_path, train_fn=fake_train, render=False)
    assert tmp_path / run.run_dir_rel in result.trained and calls(tmp_path / run.run_dir_rel) == 1


def test_run_dir_with_another_config_is_a_conflict_not_overwritten(tmp_path, fig1):
    run = fig1.runs[0]
    _partial(tmp_path / run.run_dir_rel, run.spec.replace(iters=999), 10)
    result = run_sweep(fig1, tmp_path, train_fn=fake_train, render=False)
    assert "holds another configuration" in result.failed[tmp_path / run.run_dir_rel]
    assert calls(tmp_path / run.run_dir_rel) == 0 and len(result.trained) == 1


def test_a_run_another_process_is_training_is_left_to_it(tmp_path, fig1):
    """Two sweeps at once: what one trains, the other neither trains again nor calls failed."""
    held = tmp_path / fig1.runs[0].run_dir_rel
    with RunDir(held).lock():  # as the other sweep's trainer holds it
        item = {i.run_dir: i for i in plan(fig1, tmp_path)}[held]
        assert item.status == "running" and f"in use by pid {os.getpid()}" in item.note and item.gpu_hours is None
        result = run_sweep(fig1, tmp_path, train_fn=fake_train, render=False)
    assert calls(held) == 0 and not result.failed and len(result.trained) == 1
    assert [w for w in result.warnings if "in use by pid" in w] == [item.note]


def test_run_dir_holding_only_another_config_is_free_to_train(tmp_path, fig1):
    run = fig1.runs[0]  # a run that failed before its first checkpoint left config.json alone
    RunDir(tmp_path / run.run_dir_rel).write_config(run.spec.replace(iters=999).to_dict())
    assert {i.run.name: i.status for i in plan(fig1, tmp_path)}[run.name] == "todo"
    result = run_sweep(fig1, tmp_path, train_fn=fake_train, render=False)
    assert not result.failed and calls(tmp_path / run.run_dir_rel) == 1


def test_a_failing_run_does_not_stop_the_others(tmp_path, fig1):
    messages: list[str] = []
    result = run_sweep(fig1, tmp_path, train_fn=flaky_train, render=False, report=messages.append)
    failed = tmp_path / "cifar10/tiny/plain20-s0"
    assert list(result.failed) == [failed] and str(failed) in result.failed[failed]
    assert "RuntimeError: out of luck" in result.failed[failed]
    assert [p.name for p in result.trained] == ["plain56-s0"]
    assert any("failed" in m for m in messages)


def test_ctrl_c_stops_the_sweep(tmp_path, fig1):
    from resrepro.train.loop import TrainingInterrupted

    def interrupted(spec, run_dir):  # what the trainer raises on SIGINT, after saving its checkpoint
        raise TrainingInterrupted("stopped by signal 2")

    with pytest.raises(TrainingInterrupted):
        run_sweep(fig1, tmp_path, train_fn=interrupted, render=False)


@pytest.fixture
def eight_gpus(monkeypatch):
    """What --gpus is checked against: this machine may have none."""
    monkeypatch.setattr("resrepro.sweep.jobs.gpu_count", lambda: 8)


def test_one_worker_process_per_gpu(tmp_path, fig1, eight_gpus):
    result = run_sweep(fig1, tmp_path, gpus=[3, 5], train_fn=fake_train, render=False)
    assert len(result.trained) == 2 and not result.failed
    gpus = {RunDir(p).read_summary()["gpu"] for p in result.trained}
    assert gpus <= {"3", "5"} and os.environ.get("CUDA_VISIBLE_DEVICES") != "3"


def test_gpus_per_run_gives_each_run_its_own_gpus(tmp_path, fig1, eight_gpus):
    """--gpus 3,4,5,6 --gpus-per-run 2: each run's worker sees two of them (its ranks' cuda:0 and cuda:1)."""
    result = run_sweep(fig1, tmp_path, gpus=[3, 4, 5, 6], gpus_per_run=2, train_fn=fake_train, render=False)
    assert len(result.trained) == 2 and not result.failed
    assert {RunDir(p).read_summary()["gpu"] for p in result.trained} <= {"3,4", "5,6"}


@pytest.mark.parametrize(("gpus", "per_run", "message"), [
    ([0, 1, 2], 2, "--gpus-per-run 2 must divide the 3 GPU(s) of --gpus 0,1,2"),
    (None, 2, "--gpus-per-run is for the local executor with --gpus"),
])
def test_gpus_that_do_not_share_out_are_refused_before_any_run(tmp_path, fig1, eight_gpus, gpus, per_run, message):
    from resrepro.errors import ResreproError

    with pytest.raises(ResreproError, match=re.escape(message)):
        run_sweep(fig1, tmp_path, gpus=gpus, gpus_per_run=per_run, train_fn=fake_train, render=False)
    assert not any(tmp_path.iterdir())


def test_detectors_start_after_the_backbones_the_sweep_trains_even_in_parallel(tmp_path, eight_gpus):
    exp = load_experiment("table7", "tiny")
    result = run_sweep(exp, tmp_path, gpus=[0, 1], train_fn=backbone_first_train, render=False)
    assert not result.failed and len(result.trained) == 4
    assert sorted(str(p.relative_to(tmp_path)) for p in result.evaluated) == [
        f"detection-voc/tiny/{m}-s0/eval/{p}.json" for m in ("resnet101", "vgg16-bn") for p in ("voc07", "voc12")]
    backbone = RunDir(tmp_path / "detection-voc/tiny/resnet101-s0").read_config()["backbone_run"]
    assert backbone == str(tmp_path / "imagenet/tiny/resnet101-s0")  # resolved against the runs root


def test_gpu_indices_count_the_gpus_the_sweep_sees(tmp_path, fig1, monkeypatch):
    monkeypatch.setattr("resrepro.sweep.jobs.gpu_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    result = run_sweep(fig1, tmp_path, gpus=[1], train_fn=fake_train, render=False)
    assert {RunDir(p).read_summary()["gpu"] for p in result.trained} == {"6"}


def test_a_gpu_the_machine_lacks_is_refused_before_any_run(tmp_path, fig1, monkeypatch):
    from resrepro.errors import ResreproError

    monkeypatch.setattr("resrepro.sweep.jobs.gpu_count", lambda: 2)
    with pytest.raises(ResreproError, match=r"--gpus 1,7: no GPU 7 here \(this machine has GPUs 0\.\.1\)"):
        run_sweep(fig1, tmp_path, gpus=[1, 7], train_fn=fake_train, render=False)
    assert not any(tmp_path.iterdir())


STOPPABLE_SWEEP = """
import sys
import resrepro.sweep.jobs
import resrepro.sweep.run
from resrepro.cli import main
from tests.sweep.test_run import stoppable_train

gpus = int(sys.argv[3:4] == ["--gpus"])
resrepro.sweep.jobs.gpu_count = lambda: gpus  # one GPU, or none: the CPU's workers
resrepro.sweep.jobs.cpu_cores = lambda: 1  # one run at a time on the CPU too
resrepro.sweep.run._default_train = lambda *args, **kwargs: stoppable_train
sys.argv = ["resrepro", "sweep", "fig1", "--scale", "tiny", "--runs", sys.argv[1], "--out", sys.argv[2], *sys.argv[3:]]
main()
"""

# The sweep's options: fig1's two runs on one (pretend) GPU, or on a one-core CPU; one worker either way.
ONE_WORKER = [pytest.param(["--gpus", "0"], id="gpu"), pytest.param([], id="cpu")]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # an orphan's zombie waits for an init that may never reap it: it runs no more


def _stoppable_sweep(tmp_path: Path, options: list[str]) -> tuple[subprocess.Popen, Path]:
    """A sweep of fig1's two runs through one worker (``options``: ONE_WORKER's), in the first run; (process, that
    run)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", STOPPABLE_SWEEP, str(tmp_path / "runs"), str(tmp_path / "out"),
                             *options], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (started := list((tmp_path / "runs").rglob("pid"))) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.1)
    assert len(started) == 1, "the worker did not start its run"
    return proc, started[0].parent


def _kill_leftovers(tmp_path: Path) -> None:
    for pid_file in (tmp_path / "runs").rglob("pid"):  # so that a failing test leaves no worker behind
        if _alive(pid := int(pid_file.read_text())):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("options", ONE_WORKER)
def test_sigterm_to_the_sweep_stops_its_worker_which_starts_no_other_run(tmp_path, options):
    proc, run = _stoppable_sweep(tmp_path, options)
    try:
        worker = int((run / "pid").read_text())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert err.splitlines()[-1].startswith("error: sweep stopped by SIGTERM: the runs in progress were "
                                               "checkpointed") and "Traceback" not in err
        assert (run / "stopped").read_text() == str(int(signal.SIGTERM)) and not _alive(worker)
        assert list((tmp_path / "runs").rglob("pid")) == [run / "pid"]  # the queued run never started
    finally:
        _kill_leftovers(tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a parent-death signal is Linux's")
@pytest.mark.parametrize("options", ONE_WORKER)
def test_a_worker_stops_when_its_sweep_is_killed(tmp_path, options):
    proc, run = _stoppable_sweep(tmp_path, options)
    try:
        worker = int((run / "pid").read_text())
        proc.kill()  # SIGKILL: no handler of the sweep runs
        proc.communicate(timeout=60)
        deadline = time.monotonic() + 60
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker) and (run / "stopped").read_text() == str(int(signal.SIGTERM))
        assert list((tmp_path / "runs").rglob("pid")) == [run / "pid"]
    finally:
        _kill_leftovers(tmp_path)


def test_submitit_debug_executor(tmp_path, fig1):
    opts = SlurmOptions(partition="gpu", folder=tmp_path / "logs")
    kw = {"executor": "debug", "slurm": opts, "render": False}
    result = run_sweep(fig1, tmp_path / "runs", train_fn=flaky_train, **kw)
    assert [p.name for p in result.trained] == ["plain56-s0"] and len(result.failed) == 1
    assert (tmp_path / "logs").is_dir()
    again = run_sweep(fig1, tmp_path / "runs", train_fn=fake_train, **kw)
    assert [p.name for p in again.trained] == ["plain20-s0"] and not again.failed


def test_estimate_uses_a_measured_run_of_the_same_model(tmp_path, fig1, no_benches):
    spec = fig1.runs[0].spec  # plain20 on digits, width 8
    measured = RunDir(tmp_path / "elsewhere" / "plain20-s9")
    measured.write_config(spec.replace(seed=9).to_dict())
    measured.write_summary({"status": "finished", "images_per_s": 640.0})
    items = {i.run.model: i for i in plan(fig1, tmp_path)}
    assert items["plain20"].images_per_s == 640.0 and items["plain20"].source.startswith("runs:")
    assert items["plain20"].gpu_hours == pytest.approx(spec.iters * spec.batch_size / 640.0 / 3600)
    # never measured itself: the finished net of the same width stands in, scaled by multiply-adds (FLOPs only
    # when nothing of this width ran: tests/sweep/test_estimate.py)
    assert items["plain56"].gpu_hours > items["plain20"].gpu_hours
    assert items["plain56"].source == "runs: finished plain20 runs at this width, scaled by multiply-adds"


def test_partial_estimate_counts_only_the_remaining_iterations(fig1):
    spec = fig1.runs[0].spec
    item = PlanItem(fig1.runs[0], Path("x"), "partial", done_iters=spec.iters // 2, images_per_s=100.0)
    assert item.gpu_hours == pytest.approx(spec.iters / 2 * spec.batch_size / 100.0 / 3600)


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    from resrepro.data.imagenet_digits import digits_imagefolder

    return digits_imagefolder(tmp_path_factory.mktemp("data") / "digits-imagefolder")


def short(exp: Experiment, data_dir: Path, models: tuple[str, ...]) -> Experiment:
    """The experiment's tiny runs of ``models``, cut to 4 iterations and 2 test scales, reading ``data_dir``."""
    runs = tuple(dataclasses.replace(r, spec=r.spec.replace(iters=4, milestones=(2,), eval_every=2, workers=0,
                                                            test_scales=(28, 36), device="cpu",
                                                            data_dir=str(data_dir)))
                 for r in exp.runs if r.model in models)
    return dataclasses.replace(exp, runs=runs)


def never_train(spec, run_dir):
    raise AssertionError(f"trained {run_dir} again")


def test_tiny_imagenet_experiment_trains_evaluates_and_renders(tmp_path, digits_dir):
    exp = short(load_experiment("table2", "tiny"), digits_dir, ("plain18", "resnet18-A"))
    runs = tmp_path / "runs" / "imagenet" / "tiny"
    items = plan(exp, tmp_path / "runs")
    assert [(i.status, i.evals) for i in items] == [("todo", ("ten-crop",))] * 2
    result = run_sweep(exp, tmp_path / "runs", out_dir=tmp_path / "out")
    assert sorted(p.name for p in result.trained) == ["plain18-s0", "resnet18-A-s0"] and not result.failed
    assert result.evaluated == [runs / n / "eval" / "ten-crop.json" for n in ("plain18-s0", "resnet18-A-s0")]
    summary = RunDir(runs / "plain18-s0").read_summary()
    assert (summary["family"], summary["dataset"], summary["iter"]) == ("imagenet", "digits", 4)
    ten_crop = {n: json.loads((runs / n / "eval" / "ten-crop.json").read_text()) for n in ("plain18-s0",
                                                                                           "resnet18-A-s0")}
    assert {(e["protocol"], e["images"], e["model"]) for e in ten_crop.values()} == {
        ("ten-crop", 300, "plain18"), ("ten-crop", 300, "resnet18-A")}
    assert result.rendered == [tmp_path / "out" / n for n in ("table2.md", "table2_claims.csv", "provenance.json")]
    assert not result.warnings
    made = json.loads((tmp_path / "out" / "provenance.json").read_text())["made_by"]
    assert made[0]["runs"] == 2 and made[0]["cpu"] == summary["provenance"]["cpu"]  # the CPU's model, recorded
    text = (tmp_path / "out" / "table2.md").read_text()
    assert "trained and evaluated on digits, not imagenet" in text
    row = next(line for line in text.splitlines() if line.startswith("| plain-18 "))
    assert f"{100 * ten_crop['plain18-s0']['top1_error']:.2f}" in row
    assert all(i.status == "finished" for i in plan(exp, tmp_path / "runs"))

    # Table 4 reads the same runs under another protocol: evaluated where they stand, never retrained, and
    # (here through the Slurm path's in-process executor) the ten-crop results are left as they were.
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("ten-crop.json")}
    table4 = dataclasses.replace(exp, renders=("table:table4",))
    assert [(i.status, i.evals) for i in plan(table4, tmp_path / "runs")] == [("evaluate", ("multi-scale",))] * 2
    again = run_sweep(table4, tmp_path / "runs", train_fn=never_train, executor="debug", render=False,
                      slurm=SlurmOptions(folder=tmp_path / "logs"))
    assert not again.trained and not again.failed and len(again.evaluated) == 2
    assert again.skipped == [runs / "plain18-s0", runs / "resnet18-A-s0"]  # "2 finished before", not 0
    written = json.loads((runs / "plain18-s0" / "eval" / "multi-scale.json").read_text())
    assert (written["protocol"], written["scales"], written["images"]) == ("multi-scale", [28, 36], 300)
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("ten-crop.json")} == before
    assert (runs / "plain18-s0" / "eval" / "multi-scale.probs.pt").is_file()  # what Table 5 reads
    assert not run_sweep(table4, tmp_path / "runs", train_fn=never_train, render=False).evaluated


def test_render_failure_is_a_warning(tmp_path, fig1, monkeypatch):
    from resrepro.errors import ResreproError

    def render_figure(name, runs_dir, out_dir, *, dataset=None, force=False):
        raise ResreproError(f"nothing to render in {runs_dir}")

    monkeypatch.setitem(sys.modules, "resrepro.report.figures", type(sys)("figures"))
    monkeypatch.setattr(sys.modules["resrepro.report.figures"], "render_figure", render_figure, raising=False)
    result = run_sweep(fig1, tmp_path, train_fn=fake_train, out_dir=tmp_path / "out")
    assert len(result.trained) == 2 and result.warnings == [
        f"figure:fig1: nothing to render in {tmp_path / 'cifar10' / 'tiny'}"]


def test_tables_are_written_as_markdown(tmp_path, monkeypatch):
    seen = {}

    def render_table_files(name, runs_dir=None, dataset=None):
        seen.update(name=name, runs_dir=runs_dir, dataset=dataset)
        return {f"{name}.md": f"| {name} |\n"}, ["resnet1202 missing"]

    monkeypatch.setitem(sys.modules, "resrepro.report.tables", type(sys)("tables"))
    monkeypatch.setattr(sys.modules["resrepro.report.tables"], "render_table_files", render_table_files, raising=False)
    exp = load_experiment("table6", "tiny", seeds=1)
    result = run_sweep(exp, tmp_path / "runs", train_fn=fake_train, out_dir=tmp_path / "out")
    assert result.rendered == [tmp_path / "out" / "table6.md"]
    assert (tmp_path / "out" / "table6.md").read_text() == "| table6 |\n"
    assert seen == {"name": "table6", "runs_dir": tmp_path / "runs" / "cifar10" / "tiny", "dataset": "digits"}
    assert result.warnings == ["table:table6: resnet1202 missing"]


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    return in_process_cli(monkeypatch, capsys, "sweep", *args)


def test_cli_unknown_experiment_is_one_line_exit_2(monkeypatch, capsys):
    code, _, err = _cli(monkeypatch, capsys, "fig66")
    assert code == 2 and err.count("\n") == 1 and "unknown experiment 'fig66'" in err


def test_cli_malformed_toml_names_the_line(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('title = "x"\n[[runs]\nmodels = ["plain20"]\n')
    code, _, err = _cli(monkeypatch, capsys, str(bad))
    assert code == 2 and err.count("\n") == 1 and "line 2" in err


def test_cli_error_shows_the_toml_table_it_names(tmp_path, monkeypatch, capsys):
    mine = tmp_path / "mine.toml"
    mine.write_text('title = "x"\ngroup = "cifar10"\n[scale.tiny]\niters = 10\n[[runs]]\nmodels = ["plain20"]\n')
    code, _, err = _cli(monkeypatch, capsys, str(mine), "--scale=tiny", "--dry-run")
    assert code == 2 and err.count("\n") == 1 and "(line 3): [scale.tiny] restates group 'cifar10'" in err
    assert "per run in a [[runs]] block" in err


def test_cli_sweep_with_a_failed_run_exits_non_zero_and_says_why_in_one_line(tmp_path, monkeypatch, capsys):
    """One run cannot start (its data are missing), the other's folder holds files that are no run."""
    exp = tmp_path / "exp.toml"
    exp.write_text(f'title = "t"\n[defaults]\ndataset = "cifar10"\ndata_dir = "{tmp_path / "nowhere"}"\n'
                   '[[runs]]\nmodels = ["resnet8", "plain8"]\n')
    (tmp_path / "runs" / "exp" / "full" / "plain8-s0").mkdir(parents=True)
    (tmp_path / "runs" / "exp" / "full" / "plain8-s0" / "notes.txt").write_text("mine")
    code, _, err = _cli(monkeypatch, capsys, str(exp), f"--runs={tmp_path / 'runs'}", f"--out={tmp_path / 'out'}")
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert code == 1 and "0 trained, 2 failed" in err
    assert len(failed) == 2 and "Traceback" not in err
    assert any("resnet8-s0: " in line and "cifar-10-batches-py" in line for line in failed)
    assert any("plain8-s0 holds files that are no resrepro run" in line for line in failed)


def test_a_damaged_config_is_named_in_the_plan(tmp_path, fig1):
    run = fig1.runs[0]
    _partial(tmp_path / run.run_dir_rel, run.spec, 10)
    config = tmp_path / run.run_dir_rel / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "iters": "abc"}))
    item = plan(fig1, tmp_path)[0]
    assert item.status == "conflict"
    assert f"holds a damaged run ({config}: iters should be a 64-bit integer, got 'abc')" in item.note
    measured = RunDir(tmp_path / "elsewhere")  # a finished run whose config.json is a list informs no estimate
    measured.write_config([1, 2])
    measured.write_summary({"status": "finished", "images_per_s": 10.0})
    assert not plan(fig1, tmp_path)[1].source.startswith("runs")


def test_cli_dry_run_trains_nothing(tmp_path, monkeypatch, capsys, no_benches):
    monkeypatch.setattr("resrepro.sweep.run._default_train", lambda *_, **__: pytest.fail("trained in a dry run"))
    runs = tmp_path / "runs"
    runs.mkdir()
    code, out, err = _cli(monkeypatch, capsys, "fig6", "--scale=tiny", f"--runs={runs}", "--dry-run")
    assert code == 0 and "resnet110-s0" in out and "9 todo" in err
    assert not any(runs.iterdir())
    # nothing measured: every estimate is from FLOPs and says so, and none is zero
    assert "9 estimated from FLOPs:" in err and "assumed" in err and "bench" not in out
    assert "about 0" not in err and " 0 s" not in out
    # which device the hours are for; on GPUs (Slurm, --gpus) a CPU's hours say so and how to get a GPU's
    assert "on one CPU (" in err and "not GPU-hours" in err and "GPU node" not in err
    for gpu_flags in (("--executor", "slurm"), ("--gpus", "0")):
        code, _, err = _cli(monkeypatch, capsys, "fig6", "--scale=tiny", f"--runs={runs}", "--dry-run", *gpu_flags)
        err = " ".join(err.split())
        assert code == 0 and "these are not GPU-hours" in err and "resrepro bench --model resnet56" in err
    code, _, err = _cli(monkeypatch, capsys, "fig6", "--scale=tiny", f"--runs={runs}", "--dry-run", "--executor",
                        "slurm", "--gpus-per-job", "0")
    assert code == 0 and "GPU node" not in err


def test_cli_dry_run_on_a_cpu_gives_the_wall_time_of_its_runs_side_by_side(tmp_path, monkeypatch, capsys,
                                                                           no_benches):
    from resrepro.cli.sweep import _duration

    monkeypatch.setattr("resrepro.sweep.jobs.gpu_count", lambda: 0)
    monkeypatch.setattr("resrepro.sweep.jobs.cpu_cores", lambda: 2)
    runs = tmp_path / "runs"
    hours = [i.gpu_hours for i in plan(load_experiment("fig6", "tiny"), runs)]
    for flags, slots in (((), 2), (("--parallel", "3"), 3)):
        code, _, err = _cli(monkeypatch, capsys, "fig6", "--scale=tiny", f"--runs={runs}", "--dry-run", *flags)
        wall = re.search(r"(\d+) at a time on this CPU \(--parallel\): about (.+?) of wall time", " ".join(err.split()))
        assert code == 0 and wall is not None and int(wall[1]) == slots, err
        assert wall[2] == _duration(max(sum(hours) / slots, max(hours)))
    for flags in (("--parallel", "1"), ("--gpus", "0"), ("--executor", "slurm")):  # one at a time, or not here
        code, _, err = _cli(monkeypatch, capsys, "fig6", "--scale=tiny", f"--runs={runs}", "--dry-run", *flags)
        assert code == 0 and "at a time on this CPU" not in err


def test_cli_dry_run_with_a_bench_file_estimates_from_it(tmp_path, monkeypatch, capsys):
    from resrepro.train.bench_results import bench_figure, save_bench

    bench = tmp_path / "bench"
    monkeypatch.setattr("resrepro.sweep.estimate.BENCH_FOLDERS", (bench,))
    result = {"model": "resnet56", "batch_size": 128, "iters": 50, "device": "NVIDIA H100 80GB HBM3",
              "torch": "2.14.1", "rows": [{"pipeline": "peer style", "images_per_s": 3000.0},
                                          {"pipeline": "resrepro, bf16, channels_last, compile",
                                           "images_per_s": 12_800.0}]}
    save_bench(result | bench_figure(result), bench)
    (tmp_path / "runs").mkdir()
    code, out, err = _cli(monkeypatch, capsys, "fig6", f"--runs={tmp_path / 'runs'}", "--dry-run")
    assert code == 0 and "10 todo" in err
    row = next(line for line in out.splitlines() if "resnet56-s0" in line)
    # 64,000 iterations × 128 images at the bench's 12,800 images/s: 640 s, about 11 min
    assert "12,800" in row and "11 min" in row and "bench" in row
    assert "1 estimated from bench: resnet56 on NVIDIA H100 80GB HBM3, bf16, 50 iterations of batch 128\n" in err
    assert ("9 estimated from bench: resnet56 on NVIDIA H100 80GB HBM3, bf16, 50 iterations of batch 128, "
            "scaled by multiply-adds") in err
    assert "FLOPs" not in err
    assert "of one GPU (NVIDIA H100 80GB HBM3)" in err and "GPU node" not in err


def test_an_imagenet_run_from_before_the_size_settings_is_still_recognised(tmp_path):
    # Written before ImageNetSpec had scale/crop/test_scales: the same run, with the old stored hash.
    run = load_experiment("table2", "full").runs[0]
    old = {k: v for k, v in run.spec.to_dict().items() if k not in ("scale", "crop", "test_scales")}
    rd = RunDir(tmp_path / run.run_dir_rel)
    rd.write_config({**old, "config_hash": "0123456789ab"})
    rd.write_summary({"status": "finished"})
    item = plan(load_experiment("table2", "full"), tmp_path)[0]
    assert (item.status, item.evals) == ("evaluate", ("ten-crop",))  # trained; no conflict


def test_a_run_another_process_took_after_the_plan_is_left_to_it_not_failed(tmp_path, fig1):
    """Two sweeps planned at the same moment queue the same runs; the second finds each run held when it starts."""
    from resrepro.train.rundir import RunInUse

    def held(spec, run_dir):
        raise RunInUse(f"{run_dir} is in use by pid 1")

    result = run_sweep(fig1, tmp_path / "runs", train_fn=held, render=False)
    assert not result.failed and not result.trained
    assert len([w for w in result.warnings if "in use by pid 1" in w]) == len(fig1.runs)
