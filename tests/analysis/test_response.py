"""Layer responses (Fig. 7): exact stds of constructed nets, streaming moments, layer counts, BN untouched."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from resrepro.analysis.response import ChannelMoments, layer_responses, response_layers, run_layer_responses
from resrepro.cli import main
from resrepro.errors import ResreproError
from resrepro.models import CifarResNet, create_model
from resrepro.train.spec import CifarSpec


def bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [bn for _, _, bn in response_layers(model)]


def test_batch_statistics_make_each_layers_std_its_gamma():
    # In train mode BN standardises every channel of the batch, so its output std is exactly |γ|
    # (up to eps): give layer k the scale c_k and read c_k back.
    torch.manual_seed(0)
    model = CifarResNet(1, width=4)
    scales = [0.5 + 0.25 * k for k in range(7)]
    with torch.no_grad():
        for bn, c in zip(bns(model), scales, strict=True):
            bn.weight.fill_(c)
            bn.bias.zero_()
    x = torch.randn(64, 3, 32, 32)
    stds = [r.std for r in layer_responses(model, [x[:40], x[40:]], bn_mode="train", pooling="channel")]
    assert stds == pytest.approx(scales, abs=1e-3)


def test_pooling_all_adds_the_spread_of_channel_means():
    # Two channels standardised by BN, then scaled by γ=(1, 3) and shifted by β=(-1, 1):
    # per channel the stds are 1 and 3 (mean 2); pooled, the variance is (1 + 9)/2 + 1 = 6.
    torch.manual_seed(0)
    model = CifarResNet(1, width=2)
    stem = model.bn1
    with torch.no_grad():
        stem.weight.copy_(torch.tensor([1.0, 3.0]))
        stem.bias.copy_(torch.tensor([-1.0, 1.0]))
    x = [torch.randn(32, 3, 32, 32)]
    channel = layer_responses(model, x, bn_mode="train", pooling="channel")[0].std
    pooled = layer_responses(model, x, bn_mode="train", pooling="all")[0].std
    assert channel == pytest.approx(2.0, abs=1e-3)
    assert pooled == pytest.approx(math.sqrt(6.0), abs=1e-3)


def test_eval_mode_std_of_a_known_affine_response():
    # A stem conv that only scales the centre pixel of a one-channel input by a_o, and a BN with chosen
    # running stats: the stem's response is γ_o (a_o x - μ_o) / sqrt(σ²_o + eps) + β_o, whose std is known
    # exactly from the input's own std.
    model = CifarResNet(1, width=3, in_channels=1)
    a, gamma = torch.tensor([2.0, -0.5, 1.5]), torch.tensor([0.7, 1.3, 2.0])
    var = torch.tensor([4.0, 0.25, 9.0])
    with torch.no_grad():
        model.conv1.weight.zero_()
        model.conv1.weight[:, 0, 1, 1] = a
        model.bn1.weight.copy_(gamma)
        model.bn1.bias.copy_(torch.tensor([5.0, -2.0, 0.1]))
        model.bn1.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        model.bn1.running_var.copy_(var)
    x = 3 + 2 * torch.randn(50, 1, 32, 32, dtype=torch.float64)
    std_x = x.std(correction=0).item()
    got = layer_responses(model, [x[:20].float(), x[20:].float()], pooling="channel")[0].std
    want = (gamma * a.abs() / (var + model.bn1.eps).sqrt()).mean().item() * std_x
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("pooling", ["all", "channel"])
def test_streaming_equals_one_shot_over_uneven_batches(pooling):
    torch.manual_seed(0)
    model = CifarResNet(1, width=4)
    with torch.no_grad():  # running stats away from (0, 1), so eval-mode outputs have non-zero means
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                bn.bias.uniform_(-2, 2)
    seen: dict[str, list[torch.Tensor]] = {}
    for name, _, bn in response_layers(model):
        bn.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, []).append(o.double()))
    x = torch.randn(31, 3, 32, 32)
    got = layer_responses(model, torch.split(x, [1, 13, 2, 15]), pooling=pooling)
    assert len(got) == len(seen) == 7
    for r in got:
        out = torch.cat(seen[r.name])
        if pooling == "all":
            want = out.std(correction=0).item()
        else:
            want = out.transpose(0, 1).reshape(out.shape[1], -1).std(1, correction=0).mean().item()
        assert r.std == pytest.approx(want, rel=1e-6)


def test_channel_moments_merge_exactly_with_a_large_mean():
    # Summing x and x² in one pass would lose every digit here; the pairwise merge keeps them.
    torch.manual_seed(0)
    x = 1e4 + 1e-2 * torch.randn(300, 2, 4, 4, dtype=torch.float64)
    acc = ChannelMoments()
    for part in torch.split(x, [1, 99, 7, 193]):
        acc.update(part)
    assert acc.count == 300 * 16
    assert acc.std("all") == pytest.approx(x.std(correction=0).item(), rel=1e-4)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("plain", [False, True])
def test_a_6n_plus_2_net_has_6n_plus_1_layers_with_the_stem(n, plain):
    model = CifarResNet(n, plain=plain, width=4)
    layers = response_layers(model)
    assert len(layers) == 6 * n + 1
    assert len(response_layers(model, include_stem=False)) == 6 * n
    assert layers[0][:2] == ("bn1", 0) and layers[1][:2] == ("layer1.0.bn1", 1)
    assert layers[-1][:2] == (f"layer3.{n - 1}.bn2", 3)
    out = layer_responses(model, [torch.randn(4, 3, 32, 32)], include_stem=False)
    assert [r.index for r in out] == list(range(1, 6 * n + 1)) and out[0].name == "layer1.0.bn1"


def test_imagenet_nets_count_only_their_3x3_layers():
    assert len(response_layers(create_model("resnet18"))) == 16  # 8 basic blocks; the 7×7 stem is not 3×3
    assert len(response_layers(create_model("resnet50"))) == 16  # one 3×3 per bottleneck


def test_batch_statistics_leave_running_stats_and_modes_untouched():
    torch.manual_seed(0)
    model = CifarResNet(1, width=4, shortcut="B")  # option B adds BNs outside the measured layers
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer_responses(model, [torch.randn(8, 3, 32, 32)], bn_mode="train")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training for m in model.modules())
    model.eval()
    layer_responses(model, [torch.randn(8, 3, 32, 32)], bn_mode="train")
    assert not any(m.training for m in model.modules())


def test_bad_options_are_user_errors():
    model = CifarResNet(1, width=2)
    with pytest.raises(ResreproError, match="pooling"):
        layer_responses(model, [torch.randn(2, 3, 32, 32)], pooling="max")
    with pytest.raises(ResreproError, match="no layer responses"):
        layer_responses(model, [])


def test_run_layer_responses_reads_a_checkpoint(tmp_path):
    spec = CifarSpec(model="resnet8", dataset="synthetic", width=4, iters=10)
    model = create_model("resnet8", width=4)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": model.state_dict(), "spec": spec.to_dict()}, run / "checkpoint.pt")
    table = run_layer_responses([run], pooling="channel", device="cpu", batch_size=200)
    assert list(table.columns) == ["run", "model", "layer", "stage", "name", "std", "split", "bn_mode",
                                   "pooling"]
    assert len(table) == 7 and table["layer"].tolist() == list(range(1, 8))
    assert set(table["model"]) == {"resnet8"} and (table["std"] > 0).all()


def test_cli_bad_run_dir_is_one_red_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["resrepro", "layer-response", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "missing" in err
