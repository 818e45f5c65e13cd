"""The one training step and the evaluation tally: their device sums, and (on CUDA) no host sync per call."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from resrepro.models.registry import create_model
from resrepro.train.metrics import Tally
from resrepro.train.recipe import classification_loss
from resrepro.train.step import TrainStep, make_optimizer


def tiny_step(device: torch.device, accumulate: int = 1) -> tuple[torch.nn.Module, TrainStep]:
    torch.manual_seed(0)
    model = create_model("resnet8", width=4).to(device)
    optimizer = make_optimizer(model, 0.1, 0.9, 1e-4, device)
    return model, TrainStep(model, optimizer, classification_loss, "fp32", device, accumulate=accumulate)


def batch(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_the_step_sums_each_micro_batchs_loss_misses_and_images_in_float64(accumulate) -> None:
    """The sums a run's metrics rows read: loss × images, misses, images, each added per micro-batch in float64
    (the values the step summed when its image count was a device tensor, bit for bit)."""
    x, y = batch(12, torch.device("cpu"))
    model, step = tiny_step(torch.device("cpu"), accumulate)
    expected = torch.zeros(3, dtype=torch.float64)
    for j in range(accumulate):  # the same forward on the same weights, before the step changes them
        out = model(x[j::accumulate])
        yj = y[j::accumulate]
        loss = F.cross_entropy(out, yj) * (len(yj) / len(y))
        expected += torch.stack([loss.detach().double() * len(y), (out.argmax(1) != yj).sum().double(),
                                 torch.tensor(float(len(yj)), dtype=torch.float64)])
    wrong = step(x, y, 0.1)
    assert step.sums.dtype == torch.float64 and step.sums.tolist() == expected.tolist()
    assert wrong.item() == expected[1].item() and step.sums[2].item() == 12.0
    step(x, y, 0.1)
    assert step.sums[2].item() == 24.0


def test_the_tally_counts_images_and_misses_exactly() -> None:
    tally = Tally("cpu", top5=True)
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    targets = torch.tensor([0, 0])  # right; wrong even in the top 5
    tally.add_logits(logits, targets)
    tally.add_logits(logits[:1], targets[:1])
    loss = F.cross_entropy(logits, targets, reduction="sum").double() + F.cross_entropy(logits[:1], targets[:1],
                                                                                        reduction="sum").double()
    assert tally.sums.tolist() == [loss.item(), 1.0, 1.0, 3.0] and tally.images == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("accumulate", [1, 2])
def test_on_cuda_steady_state_steps_and_tallies_never_sync_with_the_host(accumulate) -> None:
    device = torch.device("cuda")
    model, step = tiny_step(device, accumulate)
    x, y = batch(32, device)
    for _ in range(3):  # the first steps allocate momentum buffers and pick kernels
        step(x, y, 0.1)
    tally = Tally(device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step(x, y, 0.1)
        with torch.no_grad():
            tally.add_logits(model(x), y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert step.sums[2].item() == 32 * 6 and tally.images == 32
