"""`resrepro bench` results as the planner reads them: our default step's figure, and files that are none."""

from __future__ import annotations

from pathlib import Path

from resrepro.train.bench_results import read_benches


def test_the_committed_cpu_benches_are_read_with_our_default_step():
    figures = {f.model: f for f in read_benches((Path(__file__).parents[2] / "results" / "bench",))}
    assert figures["resnet56"].images_per_s == 163.2  # the NCHW (default) row, not channels_last's 201.0
    assert (figures["resnet56"].precision, figures["resnet56"].device_type) == ("fp32", "cpu")
    assert (figures["resnet56"].iters, figures["resnet56"].batch_size) == (20, 128)  # named where it is used


def test_files_that_are_no_bench_result_are_passed_over(tmp_path):
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    (tmp_path / "broken.json").write_text("{")
    assert read_benches((tmp_path, tmp_path / "missing")) == []
