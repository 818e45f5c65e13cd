"""torch.compile in the one loop, on a CPU (inductor runs there), counted with dynamo's own counters: one graph
for training, none added by evaluation (eval mode, a last short eval batch) or by a short training batch; a deep or
checkpointed net compiled block by block trains as it does eagerly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters
from torch.nn import functional as F

from resrepro.models.registry import resolve
from resrepro.train.loop import train
from resrepro.train.recipe import classification_loss
from resrepro.train.runtime import compile_model
from resrepro.train.spec import CifarSpec
from resrepro.train.step import TrainStep, make_optimizer


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def test_training_compiles_one_graph_and_evaluation_adds_none(tmp_path):
    # 500 synthetic test images in batches of 300: the last is short; evaluated at iterations 2 and 4, and on the
    # training set at the end.
    spec = CifarSpec(model="resnet8", dataset="synthetic", width=4, batch_size=32, iters=4, milestones=(3,),
                     eval_every=2, eval_batch_size=300, compile=True, device="cpu")
    summary = train(spec, tmp_path / "run")
    assert summary["status"] == "finished" and 0 <= summary["final"]["eval_error"] <= 1
    assert graphs() == 1 and not counters["graph_break"]
    assert not counters["recompiles"]


def test_a_short_batch_runs_eagerly_without_a_second_graph():
    torch.manual_seed(0)
    model = resolve("resnet8").build(width=4)
    twin = copy.deepcopy(model)
    _, forward = compile_model(model, lambda net: net)
    step = TrainStep(forward, make_optimizer(model, 0.1, 0.9, 1e-4, torch.device("cpu")), classification_loss,
                     "fp32", torch.device("cpu"), compiled_batch=8)
    eager = TrainStep(twin, make_optimizer(twin, 0.1, 0.9, 1e-4, torch.device("cpu")), classification_loss,
                      "fp32", torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    for n in (8, 7, 8):  # the middle batch lost an image that failed to decode
        x, y = torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)
        assert step(x, y, 0.1) == eager(x, y, 0.1)
    assert graphs() == 1 and not counters["recompiles"]
    torch.testing.assert_close(step.sums, eager.sums, rtol=1e-5, atol=1e-5)


def test_a_checkpointed_net_compiles_block_by_block_and_trains_as_eagerly():
    torch.manual_seed(0)
    model = resolve("resnet20").build(width=4)
    model.grad_checkpoint = True
    plain = copy.deepcopy(model)
    _, forward = compile_model(model, lambda net: net)
    assert isinstance(forward.layer1[0], torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(forward, torch._dynamo.eval_frame.OptimizedModule)  # no graph of the whole depth
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(3)]
    losses = []
    for net in (forward, plain):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for x, y in batches:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    torch.testing.assert_close(losses[:3], losses[3:], rtol=1e-4, atol=1e-5)
    assert losses[0] != losses[2]  # the weights moved
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)  # BN statistics updated once per step
    # One graph per kind of block (stage 1; stages 2 and 3, each a first block and the rest), the recompute
    # of the checkpointed stages included.
    assert graphs() == 5 and not counters["recompiles"]


def test_resnet1202_is_compiled_block_by_block():
    _, forward = compile_model(resolve("resnet1202").build(width=1), lambda net: net)  # compiles lazily: no graph
    assert sum(isinstance(m, torch._dynamo.eval_frame.OptimizedModule) for m in forward.modules()) == 600
    _, shallow = compile_model(resolve("resnet110").build(width=1), lambda net: net)
    assert isinstance(shallow, torch._dynamo.eval_frame.OptimizedModule)
