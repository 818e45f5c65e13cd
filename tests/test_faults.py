"""Damaged files and full disks: a damaged file is named in one line (exit 2), never read as if whole, and never
makes a report print a number it cannot stand behind; a run that cannot start leaves nothing behind.

Each table below is one kind of damage, done to a small run in a scratch folder (HOME isolated).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest

import resrepro.train.loop as loop
from resrepro.errors import ResreproError
from resrepro.experiments import load_experiment
from resrepro.train.rundir import RunDir
from tests.data.test_detection import write_voc, xml_of
from tests.inprocess import in_process_cli

FIXTURE_RUN = Path(__file__).resolve().parent / "fixtures" / "runs" / "cifar10" / "tiny" / "resnet20-s0"

RUN = ("train", "cifar", "--dataset", "synthetic", "--n", "1", "--width", "4", "--iters", "12", "--batch-size", "8",
       "--eval-every", "2", "--milestones", "6", "--device", "cpu", "--out", "run")


def cli(monkeypatch, capsys, where: Path, *args: str) -> tuple[int, str, str]:
    """`resrepro ARGS` in ``where``, with HOME there too."""
    monkeypatch.setenv("HOME", str(where / "home"))
    monkeypatch.chdir(where)
    return in_process_cli(monkeypatch, capsys, *args)


def one_error(code: int, err: str, message: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:] and message in lines[-1], err


@pytest.fixture
def stopped(tmp_path, monkeypatch, capsys) -> Path:
    """The run of RUN stopped at iteration 7 (as by Ctrl-C): metrics rows 2, 4, 6; a checkpoint of iteration 7."""
    with monkeypatch.context() as m:
        m.setattr(loop, "agreed_stop", lambda requested, step, *rest: step == 7)
        code, _, err = cli(m, capsys, tmp_path, *RUN)
    assert code == 2 and "stopped at iteration 7" in err, err
    assert [r["iter"] for r in RunDir(tmp_path / "run").read_metrics()] == [2, 4, 6]
    return tmp_path / "run"


def _cut_in_row_4(p: Path) -> None:
    text = p.read_text()
    p.write_text(text[:text.index("\n4,") + 8])


# metrics.csv damaged so that it cannot be read at all: resuming refuses in one line and changes nothing.
UNREADABLE_METRICS = [
    ("garbage bytes", lambda p: p.write_bytes(b"\xff\xfe\x00\x81 not text"), "is damaged (not a CSV text file"),
    ("non-numeric iter", lambda p: p.write_text(p.read_text().replace("\n4,", "\nfour,")),
     "is damaged (iter 'four' is not an iteration)"),
    ("no iter column", lambda p: p.write_text(p.read_text().replace("iter,", "step,", 1)),
     "is damaged (no iter column)"),
]


@pytest.mark.parametrize("damage, message", [c[1:] for c in UNREADABLE_METRICS], ids=[c[0] for c in UNREADABLE_METRICS])
def test_resuming_with_unreadable_metrics_is_one_line(damage, message, stopped, monkeypatch, capsys):
    metrics = stopped / "metrics.csv"
    damage(metrics)
    before = metrics.read_bytes()
    code, _, err = cli(monkeypatch, capsys, stopped.parent, *RUN)
    one_error(code, err, message)
    assert "run/metrics.csv" in err and "move it away" in err
    assert metrics.read_bytes() == before and not (stopped / "summary.json").exists()


# metrics.csv that lost rows: resuming puts back the row the checkpoint holds and names the rest in one warning.
LOST_METRICS = [
    ("cut mid-row", _cut_in_row_4, "iteration(s) 4 ", [2, 6, 8, 10, 12]),
    ("emptied", lambda p: p.write_text(""), "iteration(s) 2, 4 ", [6, 8, 10, 12]),
    ("deleted", lambda p: p.unlink(), "iteration(s) 2, 4 ", [6, 8, 10, 12]),
]


@pytest.mark.parametrize("damage, lost, kept", [c[1:] for c in LOST_METRICS], ids=[c[0] for c in LOST_METRICS])
def test_resuming_after_metrics_lost_rows_says_which(damage, lost, kept, stopped, monkeypatch, capsys):
    damage(stopped / "metrics.csv")
    code, _, err = cli(monkeypatch, capsys, stopped.parent, *RUN)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "run/metrics.csv lacks the rows of " + lost in warnings[0], err
    assert [r["iter"] for r in RunDir(stopped).read_metrics()] == kept


def test_a_sweep_over_a_run_with_unreadable_metrics_names_it(tmp_path, monkeypatch, capsys):
    fig1 = load_experiment("fig1", "tiny")
    for run in fig1.runs:  # started runs, their metrics overwritten with garbage
        rd = RunDir(tmp_path / "runs" / run.run_dir_rel)
        rd.write_config({**run.spec.to_dict(), "config_hash": run.spec.config_hash()})
        (rd.path / "metrics.csv").write_bytes(b"\xff\xfe\x00\x81")
    code, _, err = cli(monkeypatch, capsys, tmp_path, "sweep", "fig1", "--scale", "tiny", "--dry-run")
    assert code == 0 and "Traceback" not in err and err.count("metrics.csv is damaged") == 2, err
    code, _, err = cli(monkeypatch, capsys, tmp_path, "sweep", "fig1", "--scale", "tiny", "--out", "out")
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert code == 1 and "Traceback" not in err and "0 trained, 2 failed" in err, err
    assert len(failed) == 2 and all("metrics.csv is damaged (not a CSV text file" in line for line in failed)



def _disk_full_for_the_lock(monkeypatch) -> None:
    """os.write fails with ENOSPC for the lock's bytes (who holds it), as on a disk that is already full."""
    import errno
    import os

    write = os.write

    def full(fd, data):
        if bytes(data).startswith(b'{"pid"'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(fd, data)

    monkeypatch.setattr(os, "write", full)


def snapshot(root: Path) -> list[tuple[str, int, int]]:
    """Every path below ``root``, with each file's size and mtime (a folder's mtime changes with a lock's coming
    and going)."""
    return sorted((str(p.relative_to(root)), *((p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (0, 0)))
                  for p in root.rglob("*"))


@pytest.mark.parametrize("resume", [False, True], ids=["start", "resume"])
def test_a_run_on_a_full_disk_is_one_line_and_leaves_no_lock(resume, tmp_path, monkeypatch, capsys, request):
    where = request.getfixturevalue("stopped").parent if resume else tmp_path
    before = snapshot(where)
    _disk_full_for_the_lock(monkeypatch)
    code, _, err = cli(monkeypatch, capsys, where, *RUN)
    one_error(code, err, "cannot write run/.lock: No space left on device")
    assert snapshot(where) == before  # no .lock, no empty run directory


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK], ids=errno.errorcode.get)
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_file_system_without_locks_is_one_line(code, command, tmp_path, monkeypatch, capsys):
    """Lustre mounted without -o flock refuses flock() (ENOSYS); no such file system can be mounted here, so
    flock is made to refuse as it does there. The sweep's plan probes its runs' locks before training any."""
    (tmp_path / "home").mkdir()
    if command == "sweep":  # a run the plan has to probe: started, not finished
        RunDir(tmp_path / "runs/cifar10/tiny/plain20-s0").write_config({})

    def no_locks(fd, how):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    args = RUN if command == "train" else ("sweep", "fig1", "--scale", "tiny", "--runs", "runs")
    result, _, err = cli(monkeypatch, capsys, tmp_path, *args)
    lock = "run/.lock" if command == "train" else "runs"
    one_error(result, err, f"cannot lock {lock}: its file system does not support file locks ({os.strerror(code)}; "
                           "Lustre, for one, needs to be mounted with -o flock)")
    assert not (tmp_path / "run").exists()  # a run that cannot start leaves nothing behind
    kept = ["runs", "runs/cifar10", "runs/cifar10/tiny", "runs/cifar10/tiny/plain20-s0",
            "runs/cifar10/tiny/plain20-s0/config.json"] if command == "sweep" else []
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["home", *kept]


# Settings that cannot work: refused before anything is allocated or written.
REFUSED = [
    (("--milestones", "6,6"), "milestones must be increasing iterations >= 1, got [6, 6] (one given twice divides lr "
     "by 100 at once)"),
    (("--milestones", "8,6"), "milestones must be increasing iterations >= 1, got [8, 6]"),
    (("--width", "1000000"), "resnet8 of width 1000000 does not fit in cpu memory here (tried to allocate "),
]


@pytest.mark.parametrize("args, message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_a_run_that_cannot_work_is_one_line_and_writes_nothing(args, message, tmp_path, monkeypatch, capsys):
    (tmp_path / "home").mkdir()
    code, _, err = cli(monkeypatch, capsys, tmp_path, *RUN, *args)
    one_error(code, err, message)
    assert [p.name for p in tmp_path.iterdir()] == ["home"]


def test_no_committed_experiment_or_fixture_repeats_a_milestone():
    from resrepro.experiments import list_experiments

    for name in list_experiments():
        for scale in ("tiny", "full"):
            for run in load_experiment(name, scale).runs:
                assert len(set(run.spec.milestones)) == len(run.spec.milestones), (name, scale, run.name)
    for config in (Path(__file__).parent / "fixtures" / "runs").rglob("config.json"):
        if "broken" in config.parts:  # damaged on purpose: no settings to read
            continue
        milestones = json.loads(config.read_text()).get("milestones", [])
        assert len(set(milestones)) == len(milestones), config


def test_a_voc_object_with_two_names_is_one_clear_error(tmp_path):
    from resrepro.data.detection import load_detection

    write_voc(tmp_path / "VOCdevkit", "VOC2007", "trainval", {"000005": [("cat", 1, 1, 10, 20, 0)]})
    write_voc(tmp_path / "VOCdevkit", "VOC2012", "trainval", {"2008_000002": [("dog", 2, 3, 40, 30, 0)]})
    xml = xml_of(tmp_path)
    xml.write_text(xml.read_text().replace("<name>cat</name>", "<name>cat</name><name>dog</name>"))
    with pytest.raises(ResreproError, match=r"000005.xml: an object's <name> is \['cat', 'dog'\], not one class"):
        load_detection("voc07+12", "train", tmp_path)


def _unreadable(monkeypatch) -> None:
    """torch.load meets a checkpoint this user may not read (as root, chmod 000 stops nothing: simulated)."""
    import errno
    import os

    import torch

    def refused(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(torch, "load", refused)


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_checkpoint_that_may_not_be_read_is_not_called_corrupt(command, tmp_path, monkeypatch, capsys, request):
    if command == "eval":
        shutil.copytree(FIXTURE_RUN, tmp_path / "run")
        (tmp_path / "run" / "checkpoint.pt").write_bytes(b"whole, but not ours to read")
        where, args = tmp_path, ("eval", "run")
    else:
        where, args = request.getfixturevalue("stopped").parent, RUN
    before = snapshot(where)
    _unreadable(monkeypatch)
    code, _, err = cli(monkeypatch, capsys, where, *args)
    one_error(code, err, "cannot read run/checkpoint.pt: Permission denied — fix its permissions")
    assert "corrupt" not in err and "delete" not in err
    assert snapshot(where) == before


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_stop_just_after_the_final_checkpoint_wins(signum, tmp_path, monkeypatch, capsys):
    import os
    import signal

    save = loop.save_checkpoint

    def save_then_signal(path, state):
        save(path, state)
        if state["step"] == 12:
            os.kill(os.getpid(), getattr(signal, signum))

    with monkeypatch.context() as m:
        m.setattr(loop, "save_checkpoint", save_then_signal)
        code, _, err = cli(m, capsys, tmp_path, *RUN)
    if signum == "SIGTERM":
        one_error(code, err, "stopped after the last iteration (12), its checkpoint saved in run")
    else:  # a Ctrl-C is a stop the user asked for: 130 and a plain line, not an error
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 130 and "Traceback" not in err and not lines[-1].startswith("error: "), err
        assert "stopped after the last iteration (12), its checkpoint saved in run" in lines[-1], err
    assert not (tmp_path / "run" / "summary.json").exists()
    code, out, err = cli(monkeypatch, capsys, tmp_path, *RUN)  # the rerun finishes it without training
    assert code == 0 and RunDir(tmp_path / "run").read_summary()["iter"] == 12, err
    assert [r["iter"] for r in RunDir(tmp_path / "run").read_metrics()] == [2, 4, 6, 8, 10, 12]


@pytest.fixture
def cut_plain20(tmp_path, monkeypatch, capsys) -> Path:
    """A finished 12-iteration plain-20 run whose metrics.csv was cut after its third row (iteration 6)."""
    args = [{"1": "3", "run": "runs/plain20-s0"}.get(a, a) for a in RUN]
    code, _, err = cli(monkeypatch, capsys, tmp_path, *args, "--plain")
    assert code == 0, err
    metrics = tmp_path / "runs" / "plain20-s0" / "metrics.csv"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:4]))
    return tmp_path


def test_a_figure_of_a_run_whose_metrics_were_cut_says_so_and_shows_its_final_numbers(cut_plain20, monkeypatch,
                                                                                      capsys):
    final = RunDir(cut_plain20 / "runs" / "plain20-s0").read_summary()["final"]
    code, _, err = cli(monkeypatch, capsys, cut_plain20, "figure", "fig1", "--runs", "runs", "--out", "fig")
    assert code == 0 and "Traceback" not in err, err
    assert "runs/plain20-s0/metrics.csv is damaged: it ends at iteration 6, but the run finished at iteration 12" in err
    row = next(line for line in (cut_plain20 / "fig" / "fig1.md").read_text().splitlines() if "| plain-20 |" in line)
    assert f"| 12 | {100 * final['train_error']:.2f} | {100 * final['eval_error']:.2f} |" in row, row


def test_plotting_a_run_whose_metrics_were_cut_is_one_line(cut_plain20, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, cut_plain20, "plot", "runs/plain20-s0", "--out", "c.png")
    one_error(code, err, "runs/plain20-s0/metrics.csv is damaged: it ends at iteration 6, but the run finished at")
    assert not (cut_plain20 / "c.png").exists()


FIXTURES = FIXTURE_RUN.parents[1]  # tests/fixtures/runs/cifar10


def _no_config(run: Path) -> None:
    (run / "config.json").unlink()


def _bad_config(run: Path) -> None:
    (run / "config.json").write_text('{"model": "resnet20", ')


# A finished run made unreadable: table and report name it instead of counting nothing in silence.
DAMAGED_RUNS = [("config.json deleted", _no_config, "holds summary.json, metrics.csv but no config.json: the run "
                 "directory is damaged"),
                ("config.json cut", _bad_config, "config.json is not valid JSON")]


@pytest.mark.parametrize("damage, message", [c[1:] for c in DAMAGED_RUNS], ids=[c[0] for c in DAMAGED_RUNS])
def test_a_table_names_a_damaged_run(damage, message, tmp_path, monkeypatch, capsys):
    shutil.copytree(FIXTURES / "full", tmp_path / "runs")
    damage(tmp_path / "runs" / "resnet20-s0")
    code, out, err = cli(monkeypatch, capsys, tmp_path, "table", "table6", "--runs", "runs")
    assert code == 0 and "Traceback" not in err, err
    assert "warning: skipped runs/resnet20-s0: " in err and message in err, err


@pytest.mark.parametrize("damage, message", [c[1:] for c in DAMAGED_RUNS], ids=[c[0] for c in DAMAGED_RUNS])
def test_a_report_of_damaged_runs_names_them(damage, message, tmp_path, monkeypatch, capsys):
    shutil.copytree(FIXTURES / "tiny", tmp_path / "runs" / "cifar10" / "tiny")
    damage(tmp_path / "runs" / "cifar10" / "tiny" / "resnet20-s0")
    code, _, err = cli(monkeypatch, capsys, tmp_path, "report", "--runs", "runs", "--out", "results")
    one_error(code, err, "nothing to report: no runs of any experiment under runs")
    assert "1 damaged: skipped runs/cifar10/tiny/resnet20-s0: " in err and message in err


def _voc_batches(root: Path, state=None, step: int = 0):
    """One image per mini-batch over a 4-image VOC set, as the detection recipe draws them."""
    import torch

    from resrepro.data.detection import load_detection
    from resrepro.train.recipes.detection import _Batches
    from resrepro.train.spec import DetectionSpec

    train_set = load_detection("voc07+12", "train", root)
    spec = DetectionSpec(batch_size=1, workers=0)
    return _Batches(spec, train_set, step, len(train_set), 0, 1, torch.device("cpu"), state)


@pytest.mark.parametrize("corrupt", [1, 4], ids=["one image", "every image"])
def test_a_corrupt_image_in_a_one_image_batch_is_skipped_and_counted(corrupt, tmp_path):
    for year, ids in (("VOC2007", ["000001", "000002"]), ("VOC2012", ["2008_000001", "2008_000002"])):
        write_voc(tmp_path / "VOCdevkit", year, "trainval", {i: [("cat", 1, 1, 10, 20, 0)] for i in ids})
    jpegs = sorted((tmp_path / "VOCdevkit").rglob("*.jpg"))
    for jpeg in jpegs[:corrupt]:
        jpeg.write_bytes(b"\xff\xd8\xff\xe0 cut short")
    batches = _voc_batches(tmp_path)
    if corrupt == len(jpegs):
        with pytest.raises(ResreproError, match="every image of 5 training mini-batches in a row failed to decode"):
            next(batches)
        return
    drawn = [next(batches)[0][0] for _ in range(5)]  # 5 steps over 3 readable images: the stream wraps around
    assert all(image.shape[0] == 3 for image in drawn) and batches.skipped >= 1
    assert batches.state_dict()["extra"] >= 1
    resumed = _voc_batches(tmp_path, batches.state_dict(), step=5)  # a resume continues where the stream stood
    assert (next(resumed)[0][0] == next(batches)[0][0]).all()


def test_a_run_another_sweep_finished_while_this_one_waited_is_counted_once(tmp_path):
    """The other sweep holds plain20's directory when this one comes to it, and finishes it during the lock's
    patience: this sweep's trainer then finds it finished. It is the other's, not trained twice."""
    from resrepro.sweep import run_sweep

    fig1, held = load_experiment("fig1", "tiny"), {}

    def report(message: str) -> None:
        if "training" in message and "plain20" in message:  # the other sweep takes the run first
            held["lock"] = RunDir(tmp_path / fig1.runs[0].run_dir_rel).lock()
            held["lock"].__enter__()

    def train(spec, run_dir: Path) -> dict:
        if "lock" in held:  # the other finishes, and releases the run, while this one waits for it
            RunDir(run_dir).write_config({**spec.to_dict(), "config_hash": spec.config_hash()})
            RunDir(run_dir).write_summary({"status": "finished"})
            held.pop("lock").__exit__(None, None, None)
            return RunDir(run_dir).read_summary()
        RunDir(run_dir).write_config({**spec.to_dict(), "config_hash": spec.config_hash()})
        RunDir(run_dir).write_summary({"status": "finished"})
        return {}

    result = run_sweep(fig1, tmp_path, train_fn=train, report=report, render=False)
    assert [p.name for p in result.trained] == ["plain56-s0"] and not result.failed
    assert [w for w in result.warnings if "plain20" in w] == [
        f"trained by another sweep: {tmp_path / fig1.runs[0].run_dir_rel}"]
