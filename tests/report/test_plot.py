"""`resrepro plot`: training curves of any run directories."""

from __future__ import annotations

import pytest

from resrepro.errors import ResreproError
from resrepro.report.plot import plot_runs
from tests.report.test_figures import make_run


@pytest.mark.parametrize("metric", ["error", "loss", "lr"])
def test_plot_runs_writes_a_png(tmp_path, metric):
    runs = [make_run(tmp_path, "resnet20", seed) for seed in (0, 1)]
    out = plot_runs(runs, metric, tmp_path / "plots" / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_runs_rejects_a_bad_dir(tmp_path):
    with pytest.raises(ResreproError, match="config.json"):
        plot_runs([tmp_path / "nope"])
    with pytest.raises(ResreproError, match="metric"):
        plot_runs([tmp_path], metric="accuracy")
