"""Another project's CIFAR checkpoint evaluated here: akamaster/pytorch_resnet_cifar10's file format and net,
written by the test from that project's own architecture (re-typed below), imported through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from resrepro.train.imports import import_model
from tests.inprocess import in_process_cli


class _Shortcut(nn.Module):  # akamaster's LambdaLayer, option A
    def __init__(self, planes: int) -> None:
        super().__init__()
        self.planes = planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.planes // 4, self.planes // 4), "constant", 0)


class _Block(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _Shortcut(planes) if stride != 1 or in_planes != planes else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class AkamasterResNet(nn.Module):
    """akamaster's resnet.py: 16/32/64 filters, final layer `linear`, pooling over the whole last map."""

    def __init__(self, n: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(_Block(in_planes, planes, s))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        return self.linear(F.avg_pool2d(out, out.size()[3]).view(out.size(0), -1))


def akamaster_file(path, n: int = 3, seed: int = 0, num_classes: int = 10) -> AkamasterResNet:
    """Its file format: torch.save of {"state_dict": DataParallel's state dict, "best_prec1": ...}, without BN's
    num_batches_tracked (its released files predate torch 0.4.1)."""
    torch.manual_seed(seed)
    model = AkamasterResNet(n, num_classes)
    for m in model.modules():  # trained-looking BN statistics, so that every layer shapes the output
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    state = {k: v for k, v in nn.DataParallel(model).state_dict().items() if "num_batches_tracked" not in k}
    torch.save({"state_dict": state, "best_prec1": 91.73}, path)
    return model.eval()


def direct_result(model: nn.Module, fake) -> dict[str, float]:
    """The same weights evaluated here by hand, with akamaster's preprocessing (ToTensor, ImageNet Normalize)."""
    x = torch.from_numpy(fake.test_data).reshape(-1, 3, 32, 32).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    y = torch.from_numpy(fake.test_labels).long()
    with torch.no_grad():
        logits = model((x - mean) / std)
    return {"top1_error": (logits.argmax(1) != y).double().mean().item(),
            "loss": F.cross_entropy(logits, y).item(), "images": len(y)}


def test_an_akamaster_checkpoint_scores_here_what_its_own_net_scores(tmp_path, fake_cifar, monkeypatch, capsys):
    model = akamaster_file(tmp_path / "resnet20-12fca82f.th")
    common = ("eval", "--import", "akamaster:resnet20", "--weights", str(tmp_path / "resnet20-12fca82f.th"),
              "--data-dir", str(fake_cifar.root), "--skip-checksum", "--device", "cpu")
    code, out, err = in_process_cli(monkeypatch, capsys, *common, "--format", "json")
    assert code == 0, err
    ours, theirs = json.loads(out), direct_result(model, fake_cifar)
    assert ours["top1_error"] == theirs["top1_error"] and ours["images"] == theirs["images"] == 20
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    assert ours["published_top1_error"] == pytest.approx(0.0827)  # results/paper/calibration.csv
    # The same keys as a run's evaluation (tests/fixtures: `resrepro eval RUN --format json`).
    assert {"run", "model", "family", "dataset", "split", "top1_error", "loss", "images"} <= set(ours)
    code, out, err = in_process_cli(monkeypatch, capsys, *common)
    assert code == 0 and "akamaster:resnet20 on cifar10/test: top-1 error" in out
    assert "its project publishes 8.27%" in out


def test_the_same_file_in_our_appended_layout_loads_but_computes_another_function(tmp_path):
    # Shapes cannot tell the layouts apart: the name says which. resrepro:resnet20 (zeros appended) takes the
    # renamed weights without complaint, and its predictions differ: documented in `eval --help`.
    model = akamaster_file(tmp_path / "aka.th")
    torch.save({k.replace("linear.", "fc."): v for k, v in model.state_dict().items()}, tmp_path / "ours.pt")
    split = import_model("akamaster:resnet20", tmp_path / "aka.th").model
    appended = import_model("resrepro:resnet20", tmp_path / "ours.pt").model
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(split(x), model(x), atol=1e-5)
        assert not torch.allclose(appended(x), model(x), atol=1e-2)
    assert split.state_dict().keys() == appended.state_dict().keys()


@pytest.mark.parametrize("args, message", [
    (("--import", "caffe:resnet20", "--weights", "aka20.th"), "--import takes akamaster:NAME, resrepro:NAME"),
    (("--import", "akamaster:resnet18", "--weights", "aka20.th"), "akamaster publishes resnet20, resnet32"),
    (("--import", "akamaster:resnet20", "--weights", "aka32.th"),
     "do not fit akamaster:resnet20 (a 20-layer CIFAR ResNet, option A zeros split): unexpected keys layer1.3."),
    (("--import", "akamaster:resnet20", "--weights", "aka100.th"),
     "fc.weight has shape [100, 64], the architecture needs [10, 64]"),
    (("--import", "akamaster:resnet20", "--weights", "afile"), "--weights afile is not a file written by torch"),
    (("--import", "akamaster:resnet20", "--weights", "list.pt"), "--weights list.pt holds no state dict"),
    (("--import", "akamaster:resnet20", "--weights", "missing.th"), "cannot read --weights missing.th"),
    (("--import", "akamaster:resnet20", "--weights", "aka20.th", "--data-dir", "adir"),
     "CIFAR-10 must be unpacked at adir/cifar-10-batches-py/"),
    (("--import", "akamaster:resnet20"), "needs --weights FILE, a local copy of its trained weights: akamaster's "
     "resnet20-12fca82f.th"),
    (("--import", "akamaster:resnet20", "--weights", "aka20.th", "--ten-crop"), "--ten-crop/--multi-scale"),
    (("run", "--weights", "aka20.th"), "--weights and --dataset go with --import"),
])
def test_bad_imports_are_one_line_exit_2(args, message, tmp_path, monkeypatch, capsys):
    akamaster_file(tmp_path / "aka20.th")
    akamaster_file(tmp_path / "aka32.th", n=5)
    akamaster_file(tmp_path / "aka100.th", num_classes=100)  # a CIFAR-100 net
    (tmp_path / "afile").write_text("not a checkpoint\n")
    (tmp_path / "adir").mkdir()
    torch.save([1, 2], tmp_path / "list.pt")
    monkeypatch.chdir(tmp_path)
    code, _, err = in_process_cli(monkeypatch, capsys, "eval", *args, "--device", "cpu")
    assert (code, err.count("\n")) == (2, 1), err
    assert err.startswith("error: ") and message in " ".join(err.split()), err
