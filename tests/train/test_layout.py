"""The memory layout a run trains in: NHWC by default on a CPU for the CIFAR nets (every shape trains forward and
backward there, to NCHW's numbers up to rounding), NCHW for ImageNet's and detection's; recorded, and kept when
the run is resumed."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from resrepro.models.registry import resolve
from resrepro.train.checkpoint import load_checkpoint
from resrepro.train.families import family_of
from resrepro.train.loop import train
from resrepro.train.runtime import use_channels_last
from resrepro.train.spec import CifarSpec
from tests.train.killed import train_until_killed

SPEC = CifarSpec(model="resnet8", dataset="synthetic", width=4, batch_size=32, iters=24, milestones=(12, 18),
                 eval_every=6, eval_batch_size=250, checkpoint_every=6, device="cpu")
CPU = torch.device("cpu")

# Every convolution shape of the CIFAR nets of every experiment, at the tiny scale's width and the paper's, on the
# digits' 16 px and CIFAR's 32 px: a deeper net (32 to 1202 layers) repeats depth 20's shapes, plain or residual,
# and options B and C add the projections' 1x1 convolutions.
NETS = ["plain20", "resnet20", "resnet20-B", "resnet20-C"]


@pytest.mark.slow  # 16 nets at fp32 in both layouts and fp64
@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("width", [8, 16])
@pytest.mark.parametrize("name", NETS)
def test_every_cifar_net_trains_in_nhwc_on_a_cpu_to_the_nchw_numbers(name, width, size):
    """Forward and backward without fault, and NHWC's logits and gradient as close to the exact ones (fp64) as
    NCHW's. Rounding is amplified: by ReLU (an activation within 1e-7 of zero that rounds to the other side flips
    its derivative, and the gradient of every layer below moves by up to ~1%, seen in either layout), and by the
    depth of a plain net (plain-56's fp32 gradient was 5-15% off the fp64 one in either layout). A wrong kernel
    moves the gradient by its own size."""
    torch.manual_seed(0)
    nets = {layout: resolve(name).build(width=width) for layout in ("nchw", "nhwc", "exact")}
    for layout in ("nhwc", "exact"):
        nets[layout].load_state_dict(nets["nchw"].state_dict())
    nets["nhwc"], nets["exact"] = nets["nhwc"].to(memory_format=torch.channels_last), nets["exact"].double()
    x, y = torch.randn(16, 3, size, size), torch.randint(0, 10, (16,))
    images = {"nchw": x, "nhwc": x.contiguous(memory_format=torch.channels_last), "exact": x.double()}
    logits, grads = {}, {}
    for layout, net in nets.items():
        logits[layout] = net(images[layout]).double()
        F.cross_entropy(logits[layout], y).backward()
        grads[layout] = torch.cat([p.grad.double().flatten() for p in net.parameters()])

    def off(layout: str) -> tuple[float, float]:  # logits' largest error, the gradient's relative error
        return ((logits[layout] - logits["exact"]).abs().max().item(),
                ((grads[layout] - grads["exact"]).norm() / grads["exact"].norm()).item())

    (logits_nchw, grad_nchw), (logits_nhwc, grad_nhwc) = off("nchw"), off("nhwc")
    assert logits_nhwc <= max(20 * logits_nchw, 1e-4)
    assert grad_nhwc <= max(10 * grad_nchw, 0.05)


def test_on_a_cpu_cifar_defaults_to_nhwc_and_imagenet_and_detection_to_nchw(tmp_path):
    assert [family_of(f).channels_last_on_cpu for f in ("cifar", "imagenet", "detection")] == [True, False, False]
    assert use_channels_last(None, CPU, on_cpu=False) is False and use_channels_last(None, CPU, on_cpu=True)
    assert use_channels_last(False, torch.device("cuda"), on_cpu=True) is False  # asked: obeyed
    train(SPEC, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["channels_last"] is True  # recorded
    assert load_checkpoint(tmp_path / "run")["spec"]["channels_last"] is True  # what `resrepro eval` reads


@pytest.mark.parametrize("recorded", [False, None])  # None: config.json from before layouts were recorded
def test_a_run_started_in_nchw_is_resumed_in_nchw_under_todays_nhwc_default(tmp_path, recorded):
    started = SPEC.replace(channels_last=False)
    full = train(started, tmp_path / "full")
    if train(SPEC, tmp_path / "nhwc")["final"] == full["final"]:
        pytest.skip("this CPU computes the same bits in both layouts: nothing to keep")
    train_until_killed(started, tmp_path / "cut", at=12)
    config = tmp_path / "cut" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "channels_last": recorded}))
    assert train(SPEC, tmp_path / "cut")["final"] == full["final"]  # SPEC: channels_last None, today's default
    assert load_checkpoint(tmp_path / "cut")["spec"]["channels_last"] is False
