"""The sweep's own progress: run k of K, and the time the whole sweep has to go."""

from pathlib import Path
from types import SimpleNamespace

from resrepro.sweep.jobs import _left, in_process


def item(name: str, iters: int, hours: float | None, done: int = 0) -> SimpleNamespace:
    spec = SimpleNamespace(iters=iters)
    return SimpleNamespace(run=SimpleNamespace(spec=spec), run_dir=Path(name), done_iters=done, gpu_hours=hours,
                           status="todo", evals=())


def test_time_to_go_weighs_each_run_by_its_planned_hours():
    done, todo = [item("a", 100, 1.0)], [item("b", 100, 3.0), item("c", 100, 1.0)]
    # 60 s for one planned hour: 4 planned hours to go take 4 minutes, not 2 (as two more runs would).
    assert _left(done, todo, 60.0) == " (sweep: about 0:04:00 to go)"


def test_time_to_go_by_iterations_when_a_run_has_no_estimate_and_nothing_before_the_first_run_ends():
    done, todo = [item("a", 100, None)], [item("b", 300, 1.0, done=100)]
    assert _left(done, todo, 30.0) == " (sweep: about 0:01:00 to go)"
    assert _left([], done + todo, 0.0) == ""


def test_each_run_is_announced_as_run_k_of_k_with_the_time_to_go(monkeypatch):
    clock = iter([0.0, 0.0, 90.0])  # the sweep's start, then before each run
    monkeypatch.setattr("resrepro.sweep.jobs.time.monotonic", lambda: next(clock))
    monkeypatch.setattr("resrepro.sweep.jobs.RunDir", lambda path: SimpleNamespace(is_finished=lambda: False,
                                                                                     holder=lambda: None))
    lines: list[str] = []
    in_process([item("runs/a", 100, 0.5), item("runs/b", 100, 0.5)], lambda spec, run_dir: None, lines.append)
    assert lines == ["[1/2] training runs/a", "[1/2] done runs/a",
                     "[2/2] training runs/b (sweep: about 0:01:30 to go)", "[2/2] done runs/b"]
