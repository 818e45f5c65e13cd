"""Fig. 7: the standard deviation of every 3×3 layer's response (after BN, before ReLU/addition).

Forward hooks on the BatchNorm modules that follow 3×3 convs collect float64 running moments batch by batch,
so no model code changes and memory stays flat even for the 1202-layer net.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from resrepro.errors import ResreproError

if TYPE_CHECKING:
    import pandas as pd

POOLINGS = ("all", "channel")
BN_MODES = ("eval", "train")
SPLITS = ("test", "train")
COLUMNS = ("run", "model", "layer", "stage", "name", "std", "split", "bn_mode", "pooling")


@dataclass(frozen=True)
class LayerStd:
    index: int  # 1-based position among the measured layers in forward order: the paper's "layer index"
    stage: int  # 0 for the stem, 1.. for the stages (conv2_x.. in Table 1's naming)
    name: str  # the BatchNorm module's name, e.g. "layer2.0.bn1"
    std: float


class ChannelMoments:
    """Per-channel count, mean and sum of squared deviations in float64, merged batch by batch.

    Chan et al.'s parallel update keeps this exact to rounding for any batch sizes; summing x and x² instead
    would cancel catastrophically when a channel's mean is large against its std.
    """

    def __init__(self) -> None:
        self.count = 0  # elements per channel
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        dims = [0, *range(2, x.dim())]  # everything but the channel axis
        n = x.numel() // x.shape[1]
        # One batch's moments from torch's own kernel in the data's precision (float64 copies of every
        # float32 layer output would double the analysis time); the merge across batches is in float64.
        x = x.detach() if x.dtype == torch.float64 else x.detach().float()
        var, mean = torch.var_mean(x, dims, correction=0)
        mean, m2 = mean.double(), var.double() * n
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total

    def std(self, pooling: str = "all") -> float:
        """Population std of all elements (``"all"``), or per channel and averaged over channels."""
        if self.mean is None or self.m2 is None:
            raise ValueError("no responses were recorded")
        if pooling == "channel":
            return (self.m2 / self.count).sqrt().mean().item()
        # Pooling the channels adds the spread of their means to the within-channel variance.
        grand = self.mean.mean()
        m2 = self.m2.sum() + self.count * (self.mean - grand).square().sum()
        return (m2 / (self.count * self.mean.numel())).sqrt().item()


def response_layers(model: nn.Module, *, include_stem: bool = True) -> list[tuple[str, int, nn.Module]]:
    """(name, stage, BN module) of each 3×3 layer in forward order: the stem (if 3×3), then each block's.

    Works for any resrepro net (``conv1``/``bn1`` stem, ``stages()`` of blocks with ``convK``/``bnK`` pairs):
    a basic block gives two layers, a bottleneck its middle one, and an ImageNet 7×7 stem none.
    """
    if not (hasattr(model, "stages") and hasattr(model, "conv1") and hasattr(model, "bn1")):
        raise ResreproError(f"layer responses need a resrepro CIFAR/ImageNet net, got {type(model).__name__}")
    names = {module: name for name, module in model.named_modules()}
    layers = []
    if include_stem and _is_3x3(model.conv1):
        layers.append((names[model.bn1], 0, model.bn1))
    for s, stage in enumerate(model.stages(), start=1):
        for block in stage:
            k = 1
            while hasattr(block, f"conv{k}"):
                if _is_3x3(getattr(block, f"conv{k}")):
                    bn = getattr(block, f"bn{k}")
                    layers.append((names[bn], s, bn))
                k += 1
    return layers


def _is_3x3(conv: nn.Module) -> bool:
    return isinstance(conv, nn.Conv2d) and tuple(conv.kernel_size) == (3, 3)


def layer_responses(
    model: nn.Module,
    batches: Iterable[torch.Tensor | Sequence[torch.Tensor]],
    *,
    pooling: str = "all",
    include_stem: bool = True,
    bn_mode: str = "eval",
) -> list[LayerStd]:
    """The std of each 3×3 layer's BN output over all ``batches`` (inputs, or (inputs, labels) pairs).

    The paper leaves the details open (§4.2, Fig. 7); our choices, each an option:
    ``include_stem=True`` counts the first 3×3 layer too, so a 6n+2-layer net has 6n+1 points as in the
    paper's plot. ``pooling="all"`` is the population std of every output element (images, channels,
    positions), the literal "std of the responses"; ``"channel"`` is each channel's std averaged over
    channels, which leaves out the spread of the channel means (BN's β). ``bn_mode="eval"`` normalises with
    the running statistics, as the trained net is used at test time; ``"train"`` with each batch's own.
    Either way the model's BN buffers and train/eval flags are exactly as before when this returns.
    """
    _check_choice("pooling", pooling, POOLINGS)
    _check_choice("bn_mode", bn_mode, BN_MODES)
    layers = response_layers(model, include_stem=include_stem)
    moments = [ChannelMoments() for _ in layers]
    flags = {m: m.training for m in model.modules()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    handles = [bn.register_forward_hook(_recorder(acc))
               for (_, _, bn), acc in zip(layers, moments, strict=True)]
    device = next(model.parameters()).device
    model.eval()
    if bn_mode == "train":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    try:
        with torch.no_grad():
            for batch in batches:
                x = batch if isinstance(batch, torch.Tensor) else batch[0]
                model(x.to(device, torch.float32))
    finally:
        for h in handles:
            h.remove()
        # Batch-statistics mode would otherwise fold the analysed data into the running statistics.
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        for m, training in flags.items():
            m.training = training
    if not layers or moments[0].count == 0:
        raise ResreproError("no layer responses recorded: the data held no images or the net no 3×3 layers")
    return [LayerStd(i, stage, name, acc.std(pooling))
            for i, ((name, stage, _), acc) in enumerate(zip(layers, moments, strict=True), start=1)]


def _recorder(acc: ChannelMoments):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        acc.update(output)

    return hook


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ResreproError(f"unknown {what} {value!r}: choose {' or '.join(choices)}")


def run_layer_responses(
    run_dirs: Iterable[str | Path],
    *,
    split: str = "test",
    bn_mode: str = "eval",
    pooling: str = "all",
    include_stem: bool = True,
    data_dir: str | Path | None = None,
    batch_size: int = 500,
    device: str = "auto",
) -> pd.DataFrame:
    """Layer responses of trained runs as a tidy table with columns :data:`COLUMNS` (one row per layer).

    ``split="test"`` uses the test set, ``"train"`` the run's training images (unaugmented); both are
    normalised as in training. ``data_dir`` defaults to each run's own.
    """
    import pandas as pd

    from resrepro.data.pipeline import eval_batches
    from resrepro.train.families import load_trained

    _check_choice("split", split, SPLITS)
    _check_choice("pooling", pooling, POOLINGS)
    _check_choice("bn_mode", bn_mode, BN_MODES)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    rows, datasets = [], {}
    for run in run_dirs:
        path = Path(run)
        if not path.exists():
            raise ResreproError(f"{path} does not exist: pass run directories or checkpoints of trained runs")
        spec, model = load_trained(path, device=device)
        data, mean, std = _split_data(spec, split, data_dir, device, datasets)
        batches = eval_batches(data, batch_size, device=device, mean=mean, std=std)
        for r in layer_responses(model, batches, pooling=pooling, include_stem=include_stem, bn_mode=bn_mode):
            rows.append((str(path), spec.model, r.index, r.stage, r.name, r.std, split, bn_mode, pooling))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _split_data(spec, split: str, data_dir, device: str, cache: dict):
    """The images to analyse (kept on the device for the next run) and the run's own normaliser."""
    from resrepro.data.datasets import load_dataset
    from resrepro.data.pipeline import normalizer

    root = data_dir if data_dir is not None else spec.data_dir
    key = (spec.dataset, str(root), spec.val_split, spec.normalize, split)
    if key not in cache:
        splits = load_dataset(spec.dataset, root, val_split=spec.val_split, verify=spec.verify)
        mean, std = normalizer(splits.train, spec.normalize)
        if split == "train":
            data = splits.train
        else:
            data = splits.eval if splits.eval_split == "test" else load_dataset(spec.dataset, root,
                                                                                verify=spec.verify).eval
        cache[key] = (data.to(device), mean, std)
    return cache[key]
