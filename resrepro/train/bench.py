"""`resrepro bench`: the training loop's own step (:class:`~resrepro.train.step.TrainStep`) against the common
peer style, on the same machine in one run.

The baseline is what most public CIFAR ResNet repos do: a torchvision dataset of PIL images,
RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize in DataLoader workers, fp32 eager.
Both train the same model on the same (random) images; only the pipeline and the step differ.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import torch
from torch.nn import functional as F

from resrepro.data.pipeline import BatchStream, ImageSet, normalizer
from resrepro.errors import ResreproError
from resrepro.models.registry import resolve
from resrepro.train.provenance import device_name
from resrepro.train.recipe import classification_loss
from resrepro.train.runtime import compile_model, resolve_device, use_channels_last
from resrepro.train.step import TrainStep, make_optimizer

WARMUP_ITERS = 10  # also absorbs torch.compile's first compilation


def _random_cifar(n: int = 10_000) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                    torch.randint(0, 10, (n,), generator=g), 10, "bench")


def _time_steps(step, batches, iters: int, device: torch.device, warmup: int = WARMUP_ITERS) -> dict[str, float]:
    for _ in range(warmup):
        step(*next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(iters):
        step(*next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"seconds": seconds, "peak_memory_mib": peak / 2**20 if peak else None}


def _peer_step(model, device):
    """The peer style's step: fp32 eager, plain SGD, the loss computed by hand."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step(x, y):
        loss = F.cross_entropy(model(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _our_step(model, forward, precision: str, device, loss=classification_loss, lr: float = 0.1,
              weight_decay: float = 1e-4):
    """The training loop's own step (:class:`TrainStep`), at a fixed lr: what `resrepro train` runs."""
    step = TrainStep(forward, make_optimizer(model, lr, 0.9, weight_decay, device), loss, precision, device)
    return lambda x, y: step(x, y, lr)


def _baseline_batches(data: ImageSet, batch_size: int, workers: int, device):
    import torchvision.transforms as T
    from PIL import Image

    class PilDataset(torch.utils.data.Dataset):
        def __init__(self):
            self.images = data.images.permute(0, 2, 3, 1).numpy()
            self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                        T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.images[i])), int(data.labels[i])

    loader = torch.utils.data.DataLoader(PilDataset(), batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    while True:
        yield from loader


def run_bench(model_name: str, *, iters: int = 50, batch_size: int = 128, device: str = "auto",
              workers: int = 2) -> dict[str, Any]:
    if resolve(model_name).family != "cifar":
        raise ResreproError(f"{model_name} is an ImageNet net: time it with `resrepro bench --family imagenet`")
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    data = _random_cifar()
    rows = []
    ours = "resrepro: on-device uint8 data + tensor augmentation"
    # (label, precision, channels_last, compile). On a CPU our loop is timed in both memory layouts, side by side
    # (which one oneDNN runs faster depends on the processor); the training default is the second row.
    contenders = [("peer style: DataLoader + PIL transforms, fp32 eager", "fp32", False, False)]
    if cuda:
        contenders.append((ours + ", bf16, channels_last, compile", "auto", True, True))
    else:
        contenders += [(ours + ", channels_last (default)", "auto", True, False),
                       (ours + ", NCHW (--no-channels-last)", "auto", False, False)]
    for label, precision, channels_last, fast in contenders:
        torch.manual_seed(0)
        model = resolve(model_name).build().to(dev)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        forward = compile_model(model, lambda net: net)[1] if fast else model  # as training compiles it
        model.train()
        if label.startswith("peer"):
            batches, step = _baseline_batches(data, batch_size, workers, dev), _peer_step(model, dev)
        else:
            mean, std = normalizer(data, "pixel-mean")
            batches = BatchStream(data, batch_size, device=dev, seed=0, mean=mean, std=std,
                                  channels_last=channels_last)
            step = _our_step(model, forward, precision, dev)
        timing = _time_steps(step, batches, iters, dev)
        rows.append({"pipeline": label, "images_per_s": _sig(iters * batch_size / timing["seconds"]),
                     "ms_per_iter": _sig(1000 * timing["seconds"] / iters),
                     "peak_memory_mib": timing["peak_memory_mib"]})
    return _with_figure({"model": model_name, "batch_size": batch_size, "iters": iters, "device": device_name(dev),
                         "torch": torch.__version__, "rows": rows,
                         "speedup": rows[1]["images_per_s"] / rows[0]["images_per_s"]})


def _random_batches(batch_size: int, size: int, classes: int, device, channels_last: bool = False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, size, size, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch_size,), generator=g).to(device)
    while True:
        yield x, y


def run_imagenet_bench(model_name: str, *, iters: int = 20, batch_size: int = 64, device: str = "auto",
                       workers: int = 8, data_dir: str | None = None) -> dict[str, Any]:
    """The model step (fp32 eager vs our fast path) on resident tensors, and, with ``data_dir``, the images/s
    the recipe's §3.4 batches (JPEG decode, scale augmentation and crop in ``workers`` workers; flip, PCA lighting
    and normalisation on the device) deliver, beside the peer pipeline's (``pipeline_ratio``: ours / peer's).
    A GPU is fed when the pipeline's images/s exceed the fast step's."""
    if resolve(model_name).family != "imagenet":
        raise ResreproError(f"{model_name} is a CIFAR net; `resrepro bench --family imagenet` times ImageNet "
                            "nets (resnet18 ... resnet152)")
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    # The data pipeline first: a folder too small to time is refused before minutes of model steps.
    pipeline = [] if data_dir is None else time_imagenet_pipelines(data_dir, batch_size, workers, iters, dev)
    rows = []
    channels_last = use_channels_last(None, dev)
    fast_label = "model step: resrepro" + (" bf16, channels_last, compile" if cuda else
                                           ", channels_last" if channels_last else "")
    for label, precision, layout, fast in (("model step: fp32 eager (peer style)", "fp32", False, False),
                                           (fast_label, "auto", channels_last, cuda)):
        torch.manual_seed(0)
        model = resolve(model_name).build().to(dev)
        if layout:
            model = model.to(memory_format=torch.channels_last)
        forward = compile_model(model, lambda net: net)[1] if fast else model  # as training compiles it
        model.train()
        batches = _random_batches(batch_size, 224, 1000, dev, layout)
        step = _peer_step(model, dev) if label.endswith("(peer style)") else _our_step(model, forward, precision, dev)
        timing = _time_steps(step, batches, iters, dev)
        rows.append({"stage": label, "images_per_s": _sig(iters * batch_size / timing["seconds"]),
                     "ms_per_iter": _sig(1000 * timing["seconds"] / iters),
                     "peak_memory_mib": timing["peak_memory_mib"]})
    return _with_figure({"model": model_name, "batch_size": batch_size, "iters": iters, "device": device_name(dev),
                         "torch": torch.__version__, "rows": rows + pipeline,
                         "speedup": rows[1]["images_per_s"] / rows[0]["images_per_s"],
                         **({"pipeline_ratio": pipeline[0]["images_per_s"] / pipeline[1]["images_per_s"]}
                            if pipeline else {})})


def _with_figure(result: dict[str, Any]) -> dict[str, Any]:
    """The result with the figure `sweep --dry-run` estimates from: our default step's images/s, the net's
    width, image size, precision and multiply-adds."""
    from resrepro.train.bench_results import bench_figure

    return result | bench_figure(result)


def _sig(x: float) -> float:
    # Four significant digits, not a fixed number of decimals: decoding a batch of tiny JPEGs takes a fraction
    # of a millisecond, where two decimals lose several per cent, and a loaded CPU steps ResNet-18 at ~1 image/s,
    # where one decimal of images/s loses as many.
    return float(f"{x:.4g}")


def time_imagenet_pipelines(data_dir: str, batch_size: int, workers: int, iters: int,
                            device: torch.device) -> list[dict[str, Any]]:
    """Images/s of the recipe's own training batches (the one ImageNet loader training uses: uint8 crops from the
    workers, the augmentation finished on ``device``), and of the peer pipeline on the same folder with as many
    workers: torchvision's ImageFolder with RandomResizedCrop, flip, ToTensor and Normalize, float32 from the
    workers, copied to the device."""
    from resrepro.train.families import make_recipe
    from resrepro.train.spec import ImageNetSpec

    spec = ImageNetSpec(model="resnet18", data_dir=data_dir, batch_size=batch_size, workers=workers,
                        device=str(device))
    try:
        ours = make_recipe(spec, device, use_channels_last(None, device)).batches(0, None)
    except ResreproError as e:
        raise ResreproError(f"{data_dir} holds too few training images to time batches of {batch_size}: {e}") from None
    rows = []
    for label, batches in ((f"data pipeline: resrepro, uint8 crops from {workers} workers, finished on the device",
                            ours),
                           (f"data pipeline: peer style, ImageFolder + transforms to float32 in {workers} workers",
                            _peer_imagenet_batches(data_dir, batch_size, workers, device))):
        next(batches)  # worker start-up is not throughput
        start, images = time.perf_counter(), 0
        for _ in range(iters):
            images += len(next(batches)[1])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        rows.append({"stage": label, "images_per_s": _sig(images / seconds),
                     "images_per_s_per_worker": _sig(images / seconds / max(workers, 1)),
                     "ms_per_iter": _sig(1000 * seconds / iters), "peak_memory_mib": None})
    return rows


def _peer_imagenet_batches(data_dir: str, batch_size: int, workers: int, device: torch.device):
    """The data pipeline of torchvision's ImageNet reference and most peers: endless float32 batches."""
    from pathlib import Path

    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    from resrepro.data.imagenet import IMAGENET_MEAN, IMAGENET_STD

    transform = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    loader = torch.utils.data.DataLoader(ImageFolder(str(Path(data_dir).expanduser() / "train"), transform),
                                         batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _calibrated_classifier(name: str, width: int) -> dict[str, torch.Tensor]:
    """A random classifier whose BN statistics are measured on random images, as pre-training leaves them. With
    the initial ones (mean 0, var 1) frozen BN is the identity, ResNet-101's activations explode, the RPN
    proposes NaN boxes that are dropped, and conv5_x would be timed on almost no regions."""
    from resrepro.models.detection import IMAGENET_MEAN
    from resrepro.models.registry import resolve

    net = resolve(name).build(width=width).train()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not bns:  # VGG-16: nothing to measure
        return net.state_dict()
    for m in bns:
        m.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        images = torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        net(images - torch.tensor(IMAGENET_MEAN).view(3, 1, 1))  # as the detector feeds them ("pixel-mean")
    return net.state_dict()


def run_detection_bench(backbones: tuple[str, ...] = ("resnet101", "vgg16"), *, iters: int = 3, batch_size: int = 2,
                        width: int | None = None, image_size: int | None = None, device: str = "auto",
                        ) -> dict[str, Any]:
    """Faster R-CNN training steps (fp32 eager, SGD as the paper's fine-tuning) of each backbone, side by side, on
    the same random images with a few boxes each. Defaults: the paper's nets at 600 px on a GPU; a CPU times
    width-8 nets on 224-px images (one to two minutes for both on 2 shared cores: ResNet's conv5_x runs on each of
    the 2 × 128 sampled regions, the C4 design's cost). Anchors scale with the image."""
    from resrepro.models.detection import backbone_spec, build_detector
    from resrepro.train.recipes.detection import detection_loss

    for name in backbones:
        backbone_spec(name)  # an unknown name or a CIFAR net fails before any timing
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    width = width or (64 if cuda else 8)
    size = image_size or (600 if cuda else 224)
    if size < 64:
        raise ResreproError(f"--image-size must be at least 64 px (stride-16 maps of 4+ cells), got {size}")
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size * 4 // 3, generator=g).to(dev) for _ in range(batch_size)]
    targets = []
    for _ in range(batch_size):  # 3 boxes of 1/8 to 1/2 of the shorter side, inside the image
        wh = torch.randint(size // 8, size // 2, (3, 2), generator=g).float()
        xy = torch.rand(3, 2, generator=g) * (size - wh)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(dev),
                        "labels": torch.randint(1, 21, (3,), generator=g).to(dev)})
    rows = []
    for name in backbones:
        torch.manual_seed(0)
        model = build_detector(name, 20, width=width, min_size=size, max_size=size * 5 // 3,
                               anchor_sizes=tuple(round(a * size / 600) for a in (128, 256, 512)),
                               classifier_state=_calibrated_classifier(name, width)).to(dev).train()

        step = _our_step(model, model, "fp32", dev, detection_loss, lr=0.001, weight_decay=5e-4)
        timing = _time_steps(step, itertools.repeat((images, targets)), iters, dev, warmup=1)
        rows.append({"backbone": name, "images_per_s": _sig(iters * batch_size / timing["seconds"]),
                     "ms_per_iter": _sig(1000 * timing["seconds"] / iters),
                     "peak_memory_mib": timing["peak_memory_mib"],
                     "params": sum(p.numel() for p in model.parameters())})
    return {"backbones": list(backbones), "batch_size": batch_size, "iters": iters, "width": width,
            "image_size": size, "device": device_name(dev), "torch": torch.__version__, "rows": rows}
