"""The tiny ImageNet scale's one architectural deviation, `zero_init_residual` (off by default, the paper's γ = 1):
the last BN of every residual branch starts at γ = 0, so each block starts as its shortcut; plain nets are left as
they are. Runs recorded before the setting existed keep their config hashes."""

import pytest
import torch
from torch import nn

from resrepro.experiments import load_experiment
from resrepro.models.blocks import BasicBlock, Bottleneck, zero_init_residual
from resrepro.models.registry import resolve
from resrepro.train.checkpoint import load_checkpoint
from resrepro.train.loop import train
from resrepro.train.spec import ImageNetSpec
from tests.imagefolder import write_imagefolder


def last_bn(block: nn.Module) -> nn.BatchNorm2d:
    return block.bn3 if isinstance(block, Bottleneck) else block.bn2


@pytest.mark.parametrize("name, blocks", [("resnet18-A", 8), ("resnet34-C", 16), ("resnet50", 16), ("resnet152", 50)])
def test_every_residual_branch_ends_at_gamma_zero_and_each_block_starts_as_its_shortcut(name, blocks):
    model = resolve(name).build(num_classes=10, width=8)
    zero_init_residual(model)
    found = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    assert len(found) == blocks
    assert all(last_bn(m).weight.abs().sum() == 0 and last_bn(m).bias.abs().sum() == 0 for m in found)
    assert all(m.bn1.weight.eq(1).all() for m in found)  # only the last BN of each branch
    block = found[1]  # its input is the block's output: relu(0 + shortcut(x)) == shortcut(x) for x >= 0
    x = torch.rand(2, block.conv1.in_channels, 7, 7)
    assert torch.equal(block.train()(x), torch.relu(block.shortcut(x)))


def test_plain_nets_keep_gamma_one():
    model = resolve("plain34").build(num_classes=10, width=8)
    zero_init_residual(model)
    assert all(m.weight.eq(1).all() for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_a_run_trains_from_that_init_and_old_runs_keep_their_hashes(tmp_path):
    data = write_imagefolder(tmp_path / "data")
    settings = dict(model="resnet18-A", width=8, batch_size=6, iters=1, milestones=(1,), eval_every=1,
                    checkpoint_every=1, workers=0, device="cpu", data_dir=str(data), lr=1e-9, weight_decay=0.0,
                    momentum=0.0)
    plain, zeroed = ImageNetSpec(**settings), ImageNetSpec(**settings, zero_init_residual=True)
    assert "zero_init_residual" not in plain.identity()  # the paper's default hashes as every earlier run did
    assert zeroed.config_hash() != plain.config_hash()
    for spec, name in ((plain, "plain"), (zeroed, "zeroed")):
        train(spec, tmp_path / name)
    gammas = {name: load_checkpoint(tmp_path / name)["model"]["layer1.0.bn2.weight"] for name in ("plain", "zeroed")}
    # lr 1e-9: one step leaves each γ where it started
    assert (gammas["plain"] - 1).abs().max() < 1e-6 and gammas["zeroed"].abs().max() < 1e-6


def test_the_tiny_imagenet_scale_turns_it_on_and_the_full_scale_keeps_the_paper():
    for name in ("table2", "table3", "table7"):
        for scale, on in (("tiny", True), ("full", False)):
            specs = [r.spec for r in load_experiment(name, scale).runs if isinstance(r.spec, ImageNetSpec)]
            assert specs and all(s.zero_init_residual is on for s in specs), (name, scale)
