"""Damaged files and full disks: a damaged file is named in one line (exit 2), never read as if whole, and never
makes a report print a number it cannot stand behind; a run that cannot start leaves nothing behind.

Each table below is one kind of damage, done to a small run in a scratch folder (HOME isolated).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import resrepro.train.loop as loop
from resrepro.experiments import load_experiment
from resrepro.train.rundir import RunDir
from tests.inprocess import in_process_cli

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
