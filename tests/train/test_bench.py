"""`resrepro bench`: both contenders train the same model, the figures are consistent, and bad input is refused.

Nothing here judges speed (that is what the command is for): the tests check what the rows mean.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from resrepro.errors import ResreproError
from resrepro.train.bench import (
    _baseline_batches,
    _calibrated_classifier,
    _random_cifar,
    run_bench,
    run_detection_bench,
    run_imagenet_bench,
)
from tests.imagefolder import write_imagefolder


def _consistent(row: dict, batch_size: int) -> None:
    # images/s and ms/iteration are two views of one measurement.
    assert row["images_per_s"] > 0
    assert row["images_per_s"] * row["ms_per_iter"] / 1000 == pytest.approx(batch_size, rel=0.02)


def test_cifar_bench_times_the_baseline_then_ours_and_reports_their_ratio() -> None:
    result = run_bench("resnet20", iters=2, batch_size=16, device="cpu", workers=0)
    baseline, ours, nchw = result["rows"]  # on a CPU our loop in both memory layouts, the default first
    assert baseline["pipeline"].startswith("peer style") and ours["pipeline"].endswith("channels_last (default)")
    assert nchw["pipeline"].endswith("NCHW (--no-channels-last)")
    for row in result["rows"]:
        _consistent(row, 16)
    assert result["speedup"] == pytest.approx(ours["images_per_s"] / baseline["images_per_s"])
    assert (result["model"], result["batch_size"], result["iters"]) == ("resnet20", 16, 2)
    # what `sweep --dry-run` reads back: our default step, as `resrepro train` runs on this device
    assert (result["images_per_s"], result["precision"], result["width"], result["image_size"]) == \
        (ours["images_per_s"], "fp32", 16, 32)
    assert result["macs"] == 40_551_040  # ResNet-20 at 32 px: the 41M of `resrepro models`


def test_baseline_is_the_peer_pipeline_pad4_crop_flip_normalize() -> None:
    data = _random_cifar(64)
    x, y = next(_baseline_batches(data, 32, 0, torch.device("cpu")))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (32,)
    # Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)) maps [0, 1] to about [-2, 2.1]; a zero-padded border
    # pixel sits at -mean/std, the lowest value a channel can take.
    assert x.min() >= -2.0 and x.max() <= 2.2
    assert set(y.tolist()) <= set(data.labels.tolist())


def test_imagenet_bench_times_the_model_step_and_the_data_pipeline(tmp_path, monkeypatch) -> None:
    import resrepro.train.recipes.imagenet as recipe

    served = []
    serve = recipe._Batches.__next__
    monkeypatch.setattr(recipe._Batches, "__next__", lambda self: served.append(1) or serve(self))
    root = write_imagefolder(tmp_path / "imagenet", train=6, val=1)
    result = run_imagenet_bench("resnet18", iters=2, batch_size=4, device="cpu", workers=0, data_dir=str(root))
    eager, ours, pipeline, peer = result["rows"]
    assert eager["stage"].startswith("model step: fp32") and ours["stage"].startswith("model step: resrepro")
    assert pipeline["stage"].startswith("data pipeline: resrepro, uint8 crops from 0 workers")
    assert peer["stage"].startswith("data pipeline: peer style")
    for row in (eager, ours, pipeline, peer):
        _consistent(row, 4)
    assert result["speedup"] == pytest.approx(ours["images_per_s"] / eager["images_per_s"])
    assert result["pipeline_ratio"] == pytest.approx(pipeline["images_per_s"] / peer["images_per_s"])
    assert len(served) == 3  # the recipe's own training batches: one to start the workers, two timed


def test_imagenet_bench_refuses_a_cifar_net_and_a_folder_too_small_to_time(tmp_path) -> None:
    with pytest.raises(ResreproError, match="resnet56 is a CIFAR net"):
        run_imagenet_bench("resnet56", iters=1, device="cpu")
    root = write_imagefolder(tmp_path / "imagenet", train=1, val=1)  # 3 images: not even one batch of 4
    with pytest.raises(ResreproError, match="too few training images"):
        run_imagenet_bench("resnet18", iters=1, batch_size=4, device="cpu", workers=0, data_dir=str(root))


def test_detection_bench_times_each_backbone_with_the_detector_it_names() -> None:
    from resrepro.models import count_params
    from resrepro.models.detection import build_detector

    result = run_detection_bench(("vgg16", "resnet18"), iters=1, batch_size=2, width=8, image_size=64, device="cpu")
    assert [row["backbone"] for row in result["rows"]] == ["vgg16", "resnet18"]
    for row in result["rows"]:
        _consistent(row, 2)
        assert row["params"] == count_params(build_detector(row["backbone"], 20, width=8))  # width reached the net
    assert (result["width"], result["image_size"], result["batch_size"]) == (8, 64, 2)
    with pytest.raises(ResreproError, match="CIFAR net"):
        run_detection_bench(("resnet56",), device="cpu")


def test_detection_bench_times_resnet101_with_measured_bn_statistics() -> None:
    # With BN's initial statistics frozen, ResNet-101's losses run into the thousands, the RPN's boxes go NaN and are
    # dropped, and the bench would time conv5_x on almost no regions.
    from resrepro.models.detection import build_detector

    torch.manual_seed(0)
    det = build_detector("resnet101", 20, width=8, min_size=96, max_size=128, anchor_sizes=(16, 32, 64),
                         classifier_state=_calibrated_classifier("resnet101", 8)).train()
    boxes = torch.tensor([[10.0, 20.0, 60.0, 70.0]])
    losses = det([torch.rand(3, 96, 128)], [{"boxes": boxes, "labels": torch.tensor([3])}])
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_classifier"] < 100


def test_cli_bench_records_its_figure_where_sweep_dry_run_reads_it(tmp_path, monkeypatch, capsys) -> None:
    from resrepro.train.bench_results import read_benches
    from tests.inprocess import in_process_cli

    monkeypatch.setattr("resrepro.train.bench_results.BENCH_DIR", str(tmp_path / "cache"))
    code, _, err = in_process_cli(monkeypatch, capsys, "bench", "--model", "resnet20", "--iters", "1",
                                  "--batch-size", "8", "--device", "cpu", "--workers", "0")
    assert code == 0 and "recorded for `sweep --dry-run`" in err
    (figure,) = read_benches((tmp_path / "cache",))
    assert (figure.model, figure.precision, figure.width, figure.image_size) == ("resnet20", "fp32", 16, 32)
    assert figure.images_per_s > 0


@pytest.mark.parametrize("args, message", [
    (["--family", "detection", "--backbone", "resnet56"], "CIFAR net"),
    (["--family", "detection", "--model", "resnet50"], "--backbone"),
    (["--backbone", "vgg16"], "--family detection"),
    (["--family", "detection", "--image-size", "32"], "--image-size"),
    (["--family", "foo"], "--family"),
    (["--family", "imagenet", "--model", "resnet20"], "CIFAR net"),
    (["--model", "resnet-twenty"], "unknown model"),
    (["--iters", "0"], "--iters"),
    (["--batch-size", "0"], "--batch-size"),
    (["--model", "resnet50"], "--family imagenet"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "resrepro", "bench", "--device", "cpu", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_cli_writes_the_json_it_prints(tmp_path) -> None:
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "resrepro", "bench", "--model", "resnet20", "--iters", "1",
                        "--batch-size", "8", "--device", "cpu", "--workers", "0", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert [row["pipeline"][:8] for row in result["rows"]] == ["peer sty", "resrepro", "resrepro"]
    assert "ours / baseline" in r.stderr and "resnet20, batch 8" in r.stdout


def test_the_bench_times_the_training_loops_own_step(monkeypatch) -> None:
    """Our rows run :class:`TrainStep`, the step `resrepro train` runs (a copy of it would let the two drift apart,
    and the planner would estimate from a step nobody trains with); the peer row does not."""
    from resrepro.train import step as step_module

    calls = []
    original = step_module.TrainStep.__call__

    def counted(self, x, y, lr):
        calls.append(len(y))
        return original(self, x, y, lr)

    monkeypatch.setattr(step_module.TrainStep, "__call__", counted)
    run_bench("resnet20", iters=2, batch_size=8, device="cpu", workers=0)
    warmup = 10  # WARMUP_ITERS
    assert calls == [8] * (2 * (warmup + 2))  # our two CPU rows (NCHW and channels_last), not the peer row
