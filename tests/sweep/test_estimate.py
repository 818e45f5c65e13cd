"""Where `sweep --dry-run` gets its throughput: finished runs, then bench results, then FLOPs (said so)."""

from __future__ import annotations

import pytest

from resrepro.experiments import load_experiment
from resrepro.sweep.estimate import Estimator
from resrepro.train.bench_results import bench_figure, save_bench
from resrepro.train.rundir import RunDir

GPU = ("NVIDIA H200", "cuda")
CPU = ("x86_64 (2 threads)", "cpu")


def bench(model: str, device: str, ours: float, label: str = "resrepro, bf16, channels_last, compile") -> dict:
    result = {"model": model, "batch_size": 128, "iters": 50, "device": device, "torch": "2.14.1",
              "rows": [{"pipeline": "peer style", "images_per_s": 1.0}, {"pipeline": label, "images_per_s": ours}]}
    return result | bench_figure(result)


def spec_of(model: str, scale: str = "full"):
    exp = load_experiment("fig6", scale)
    return next(r.spec for r in exp.runs if r.model == model)


def test_bench_of_the_same_net_then_scaled_by_multiply_adds(tmp_path):
    save_bench(bench("resnet56", GPU[0], 12_800.0), tmp_path)
    estimate = Estimator(tmp_path / "runs", (tmp_path,), device=CPU)
    same = estimate(spec_of("resnet56"))
    assert same.images_per_s == 12_800.0
    assert same.source == "bench: resnet56 on NVIDIA H200, bf16, 50 iterations of batch 128"
    deeper = estimate(spec_of("resnet110"))  # ~2x the multiply-adds: about half the images/s
    assert deeper.images_per_s == pytest.approx(12_800.0 * 125.75 / 253.1, rel=0.01)
    assert deeper.source.endswith("scaled by multiply-adds")


def test_this_machines_device_first_then_a_gpu(tmp_path):
    save_bench(bench("resnet56", "NVIDIA A100", 9_000.0), tmp_path)
    save_bench(bench("resnet56", CPU[0], 160.0, "resrepro, NCHW (default)"), tmp_path)
    spec = spec_of("resnet56")
    assert Estimator(tmp_path / "runs", (tmp_path,), device=CPU)(spec).images_per_s == 160.0
    assert Estimator(tmp_path / "runs", (tmp_path,), device=GPU)(spec).images_per_s == 9_000.0


def test_another_width_or_image_size_is_not_scaled_from_a_bench_but_guessed_from_flops(tmp_path):
    save_bench(bench("resnet20", CPU[0], 500.0, "resrepro, NCHW (default)"), tmp_path)
    guess = Estimator(tmp_path / "runs", (tmp_path,), device=CPU)(spec_of("plain20", "tiny"))  # width 8, 16 px
    assert guess.images_per_s > 0 and guess.source.startswith("FLOPs:") and "assumed" in guess.source


def test_a_finished_run_of_the_same_net_comes_before_any_bench(tmp_path):
    save_bench(bench("resnet56", GPU[0], 12_800.0), tmp_path)
    spec = spec_of("resnet56")
    run = RunDir(tmp_path / "runs" / "x")
    run.write_config(spec.replace(seed=7).to_dict())
    run.write_summary({"status": "finished", "images_per_s": 9_999.0})
    got = Estimator(tmp_path / "runs", (tmp_path,), device=GPU)(spec)
    assert got.images_per_s == 9_999.0 and got.source.startswith("runs:")


def test_a_finished_run_of_another_net_at_the_same_width_is_scaled_by_multiply_adds(tmp_path):
    # The tiny scale's own runs beat any bench or FLOP guess: a tiny ResNet-110 planned after ResNet-56 ran.
    save_bench(bench("resnet56", CPU[0], 160.0, "resrepro, NCHW (default)"), tmp_path)
    done, planned = spec_of("resnet56", "tiny"), spec_of("resnet110", "tiny")
    run = RunDir(tmp_path / "runs" / "x")
    run.write_config(done.to_dict())
    run.write_summary({"status": "finished", "images_per_s": 300.0})
    got = Estimator(tmp_path / "runs", (tmp_path,), device=CPU)(planned)
    assert got.images_per_s == pytest.approx(300.0 * 125.75 / 253.1, rel=0.05)
    assert got.source == "runs: finished resnet56 runs at this width, scaled by multiply-adds"
    other_width = Estimator(tmp_path / "runs", (tmp_path,), device=CPU)(spec_of("resnet110"))  # full: width 16
    assert not other_width.source.startswith("runs:")


def test_estimates_never_fall_as_depth_grows(tmp_path):
    # ResNet-56 makes better use of a CPU per multiply-add than ResNet-20: scaling each depth from its nearest
    # bench said ResNet-44 (from ResNet-56's) trains faster than ResNet-32 (from ResNet-20's). Interpolated
    # between the two benches of one device, time per image grows with depth.
    save_bench(bench("resnet20", CPU[0], 500.0, "resrepro, NCHW (default)"), tmp_path)
    save_bench(bench("resnet56", CPU[0], 250.0, "resrepro, NCHW (default)"), tmp_path)
    save_bench(bench("resnet110", GPU[0], 9_000.0), tmp_path)  # another device: never mixed in
    estimate = Estimator(tmp_path / "runs", (tmp_path,), device=CPU)
    got = {m: estimate(spec_of(m)) for m in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")}
    speeds = [t.images_per_s for t in got.values()]
    assert speeds == sorted(speeds, reverse=True) and len(set(speeds)) == 5
    assert got["resnet20"].images_per_s == 500.0 and got["resnet56"].images_per_s == 250.0
    assert got["resnet32"].source.endswith("and resnet56, interpolated by multiply-adds")
    assert got["resnet110"].images_per_s == pytest.approx(250.0 * 125.49 / 252.89, rel=0.01)
    assert {(t.device, t.device_type) for t in got.values()} == {CPU}  # each says which device it is for
