"""`resrepro bench`: our training step against the common peer style, on the same machine in one run.

The baseline is what most public CIFAR ResNet repos do: a torchvision dataset of PIL images,
RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize in DataLoader workers, fp32 eager.
Both train the same model on the same (random) images; only the pipeline and the step differ.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.nn import functional as F

from resrepro.data.cifar import BatchStream, ImageSet, normalizer
from resrepro.models.registry import resolve
from resrepro.train.loop import autocast, resolve_device
from resrepro.train.provenance import device_name
from resrepro.train.spec import RunSpec

WARMUP_ITERS = 10  # also absorbs torch.compile's first compilation


def _random_cifar(n: int = 10_000) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                    torch.randint(0, 10, (n,), generator=g), 10, "bench")


def _time_steps(step, batches, iters: int, device: torch.device) -> dict[str, float]:
    for _ in range(WARMUP_ITERS):
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


def _make_step(model, spec: RunSpec, device):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4,
                          **({"fused": True} if device.type == "cuda" else {}))

    def step(x, y):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(spec, device):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


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
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    data = _random_cifar()
    rows = []
    contenders = [
        ("peer style: DataLoader + PIL transforms, fp32 eager", RunSpec(model=model_name, precision="fp32"), False),
        ("resrepro: on-device uint8 data + tensor augmentation" + (", bf16, channels_last, compile" if cuda else ""),
         RunSpec(model=model_name), cuda),
    ]
    for label, spec, fast in contenders:
        torch.manual_seed(0)
        model = resolve(spec.model).build().to(dev)
        if fast:
            model = torch.compile(model.to(memory_format=torch.channels_last))
        model.train()
        if label.startswith("peer"):
            batches = _baseline_batches(data, batch_size, workers, dev)
        else:
            mean, std = normalizer(data, "pixel-mean")
            batches = BatchStream(data, batch_size, device=dev, seed=0, mean=mean, std=std, channels_last=cuda)
        timing = _time_steps(_make_step(model, spec, dev), batches, iters, dev)
        rows.append({"pipeline": label, "images_per_s": round(iters * batch_size / timing["seconds"], 1),
                     "ms_per_iter": round(1000 * timing["seconds"] / iters, 2),
                     "peak_memory_mib": timing["peak_memory_mib"]})
    return {"model": model_name, "batch_size": batch_size, "iters": iters, "device": device_name(dev),
            "torch": torch.__version__, "rows": rows,
            "speedup": rows[1]["images_per_s"] / rows[0]["images_per_s"]}
