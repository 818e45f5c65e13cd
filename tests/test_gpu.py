"""What a first CUDA device must show, in one suite (`pytest -m gpu`, a few minutes on one GPU; the README gives the
one command that also writes the device's bench result): the CIFAR and ImageNet recipes' steady-state steps never
sync with the host; compile + bf16 + channels_last CIFAR learns and resumes; the ImageNet batches finished on the
device equal the CPU path's to the bit; detection boxes under bf16 are the fp32 ones; two ranks over NCCL where
two GPUs exist; `resrepro bench` on the device. (Step and tally sync checks: tests/train/test_step.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch._dynamo.utils import counters

from resrepro.train.families import make_recipe
from resrepro.train.loop import train
from resrepro.train.rundir import RunDir
from resrepro.train.spec import CifarSpec, ImageNetSpec
from resrepro.train.step import TrainStep, make_optimizer
from tests.imagefolder import write_imagefolder
from tests.train.killed import train_until_killed

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")


def tiny_imagenet(data, **changes) -> ImageNetSpec:
    return ImageNetSpec(**{**dict(model="resnet18", width=8, batch_size=6, iters=4, milestones=(2,), eval_every=2,
                                  workers=0, data_dir=str(data), scale=(40, 48), crop=32), **changes})


@pytest.mark.parametrize("family", ["cifar", "imagenet"])
def test_a_recipes_steady_state_steps_never_sync_with_the_host(tmp_path, family):
    if family == "cifar":
        spec = CifarSpec(model="resnet20", dataset="synthetic", batch_size=64, device="cuda")
    else:
        spec = tiny_imagenet(write_imagefolder(tmp_path / "data", train=8), device="cuda")
    recipe = make_recipe(spec, CUDA, channels_last=True)
    torch.manual_seed(0)
    model = recipe.build_model().to(CUDA, memory_format=torch.channels_last)
    step = TrainStep(model, make_optimizer(model, 0.1, 0.9, 1e-4, CUDA), recipe.loss, "auto", CUDA)
    batches = recipe.batches(0, None)
    for _ in range(2):  # the first steps allocate momentum buffers and pick kernels
        step(*next(batches), 0.1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            step(*next(batches), 0.1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert step.sums[2].item() == 4 * (spec.batch_size)


def test_cifar_compiled_bf16_channels_last_learns_and_resumes(tmp_path):
    # On CUDA compile, bf16 autocast and channels_last are the defaults.
    spec = CifarSpec(model="resnet20", dataset="digits", batch_size=128, iters=200, milestones=(150,), eval_every=50,
                     checkpoint_every=50, device="cuda")
    torch._dynamo.reset()
    counters.clear()
    full = train(spec, tmp_path / "full")
    assert counters["stats"]["unique_graphs"] == 1  # one training graph: evaluation never compiles
    assert full["final"]["eval_error"] < 0.5 and full["final"]["train_error"] < 0.5  # chance: 0.9
    train_until_killed(spec, tmp_path / "cut", at=100)
    resumed = train(spec, tmp_path / "cut")
    assert resumed["iter"] == 200 and [r["iter"] for r in RunDir(tmp_path / "cut").read_metrics()] == [50, 100, 150,
                                                                                                        200]
    # cuDNN is not deterministic: the resumed run is another sample of the same training, not the same bits.
    assert abs(resumed["final"]["eval_error"] - full["final"]["eval_error"]) < 0.15


def test_imagenet_batches_finished_on_the_device_are_the_cpu_batches(tmp_path):
    spec = tiny_imagenet(write_imagefolder(tmp_path / "data", train=8))
    on_cpu = make_recipe(spec, torch.device("cpu"), channels_last=False).batches(0, None)
    on_gpu = make_recipe(spec.replace(device="cuda"), CUDA, channels_last=True).batches(0, None)
    for _ in range(6):  # 4 batches an epoch: into the second epoch, each with its crops, flips and lighting
        (x, y), (xg, yg) = next(on_cpu), next(on_gpu)
        assert xg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(xg.cpu(), x) and torch.equal(yg.cpu(), y)


def test_detection_boxes_under_bf16_are_the_fp32_boxes_on_cuda():
    from resrepro.models.detection import build_detector

    torch.manual_seed(0)
    det = build_detector("resnet18", 1, width=8, anchor_sizes=(256,), aspect_ratios=(1.0,), pre_nms_test=5000,
                         proposals_test=5000, rpn_nms_thresh=1.0, box_nms_thresh=1.0, box_score_thresh=0.0,
                         box_detections_per_img=5000).to(CUDA).eval()
    with torch.no_grad():
        det.roi_heads.box_predictor.bbox_pred.weight.normal_(std=0.01)
    image = [torch.rand(3, 600, 900, device=CUDA)]

    def boxes(bf16: bool) -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            return det(image)[0]["boxes"]

    fp32, bf16 = boxes(False), boxes(True)
    assert bf16.dtype == torch.float32 and len(bf16) == len(fp32) > 1000 and fp32[:, 2:].max() > 800
    gap = (bf16[:, None, :] - fp32[None, :, :]).abs().amax(-1).amin(-1).max().item()
    assert gap < 0.5


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_ranks_over_nccl_train_and_evaluate(tmp_path):
    data = write_imagefolder(tmp_path / "data", train=8)
    args = ["train", "imagenet", "--depth", "18", "--width", "8", "--batch-size", "6", "--iters", "4", "--milestones",
            "2", "--eval-every", "2", "--workers", "0", "--device", "cuda", "--data-dir", str(data), "--out",
            str(tmp_path / "run")]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "resrepro", *args], capture_output=True, text=True, env={**os.environ})
    assert run.returncode == 0, run.stderr
    summary = RunDir(tmp_path / "run").read_summary()
    assert summary["world_size"] == 2 and 0 <= summary["final"]["eval_error"] <= 1


def test_bench_on_the_device_times_the_compiled_step_and_the_imagenet_pipeline(tmp_path):
    from resrepro.train.bench import run_bench, run_imagenet_bench

    cifar = run_bench("resnet20", iters=5, batch_size=128, device="cuda", workers=2)
    assert cifar["rows"][1]["pipeline"].endswith("bf16, channels_last, compile") and cifar["speedup"] > 0
    data = write_imagefolder(tmp_path / "data", train=12)
    imagenet = run_imagenet_bench("resnet18", iters=2, batch_size=8, device="cuda", workers=2, data_dir=str(data))
    assert [r["stage"].split(":")[0] for r in imagenet["rows"]] == ["model step"] * 2 + ["data pipeline"] * 2
    assert imagenet["pipeline_ratio"] > 0
