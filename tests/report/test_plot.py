"""`resrepro plot`: training curves of any run directories."""

from __future__ import annotations

import pytest

from resrepro.errors import ResreproError
from resrepro.report.plot import plot_runs
from tests.report.test_figures import make_run


@pytest.mark.parametrize("metric", ["error", "loss", "lr"])
def test_plot_runs_writes_a_png(tmp_path, metric):
    runs = [make_run(tmp_path, "resnet20", seed) for seed in (0, 1)]
    out, warnings = plot_runs(runs, metric, tmp_path / "plots" / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not warnings


def test_lr_is_drawn_as_steps_and_a_single_evaluation_warns(tmp_path, monkeypatch):
    from resrepro.report import plot

    drawn = []
    save = plot.save
    monkeypatch.setattr(plot, "save", lambda figure, out: drawn.append(figure) or save(figure, out))  # a spy
    plot_runs([make_run(tmp_path, "resnet20")], "lr", tmp_path / "lr.png")
    one = make_run(tmp_path, "resnet56", iters=100)  # one logged row
    _, warnings = plot_runs([one], "error", tmp_path / "one.png")
    (lr,) = drawn[0].axes[0].lines
    assert lr.get_drawstyle() == "steps-post"
    assert len(warnings) == 1 and "one row logged (iteration 100)" in warnings[0] and "--eval-every" in warnings[0]


def test_plot_runs_rejects_a_bad_dir(tmp_path):
    with pytest.raises(ResreproError, match="config.json"):
        plot_runs([tmp_path / "nope"])
    with pytest.raises(ResreproError, match="metric"):
        plot_runs([tmp_path], metric="accuracy")
