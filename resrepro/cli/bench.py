"""`resrepro bench`: training throughput of our step beside the common peer style, per family."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from resrepro.cli.common import app, check_output, err


class BenchFamily(str, Enum):
    cifar = "cifar"
    imagenet = "imagenet"
    detection = "detection"


@app.command()
def bench(
    model: str | None = typer.Option(None, help="Registry name (default: resnet56; resnet50 with --family imagenet)."),
    family: BenchFamily = typer.Option(BenchFamily.cifar, help="cifar: our loop vs DataLoader + PIL transforms; "
                                       "imagenet: the model step at 224 px and, with --data-dir, the data "
                                       "pipeline's images/s; detection: Faster R-CNN training steps per backbone."),
    backbone: list[str] | None = typer.Option(None, metavar="NAME", help="Detection backbones to time side by "
                                              "side (repeat the option; default: resnet101 and vgg16)."),
    width: int | None = typer.Option(None, min=1, help="Detection: first-stage filters (default: 64 on a GPU, 8 on "
                                     "a CPU)."),
    image_size: int | None = typer.Option(None, min=64, help="Detection: shorter side in px (default: 600 on a GPU, "
                                          "224 on a CPU)."),
    iters: int | None = typer.Option(None, min=1, help="Timed iterations per contender, after warm-up (default: 50; "
                                     "3 for detection)."),
    batch_size: int | None = typer.Option(None, min=1, help="Mini-batch size (default: 128 cifar, 64 imagenet, "
                                          "2 images detection)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    workers: int = typer.Option(2, help="DataLoader workers (the CIFAR baseline's; the ImageNet pipeline's)."),
    data_dir: Path | None = typer.Option(None, help="ImageNet ImageFolder root, to time the data pipeline too."),
    out: Path | None = typer.Option(None, help="Also write the results as JSON here."),
) -> None:
    """Training throughput of our loop vs the common peer style (DataLoader + transforms, fp32 eager)."""
    from resrepro.cli.common import Format, print_records
    from resrepro.errors import ResreproError
    from resrepro.io import write_json
    from resrepro.models.registry import resolve

    if out:
        check_output(out, folder=False)
    if model is not None:
        resolve(model)  # an unknown name is one line before torch is imported
    from resrepro.train.bench import run_bench, run_detection_bench, run_imagenet_bench

    if family is BenchFamily.detection:
        if model:
            raise ResreproError("--family detection times --backbone NAME (repeatable), not --model")
        result = run_detection_bench(tuple(backbone or ("resnet101", "vgg16")), iters=iters or 3,
                                     batch_size=batch_size or 2, width=width, image_size=image_size, device=device)
        print_records(result["rows"], Format.table, title=f"Faster R-CNN, {result['batch_size']} images of "
                      f"{result['image_size']} px, width {result['width']}, {result['device']}")
        if out:
            write_json(out, result)
        return
    if backbone or width or image_size:
        raise ResreproError("--backbone, --width and --image-size go with --family detection")
    iters = iters or 50
    if family is BenchFamily.cifar:
        model = model or "resnet56"
        result = run_bench(model, iters=iters, batch_size=batch_size or 128, device=device, workers=workers)
    else:
        model = model or "resnet50"
        result = run_imagenet_bench(model, iters=iters, batch_size=batch_size or 64, device=device,
                                    workers=workers, data_dir=str(data_dir) if data_dir else None)
    print_records(result["rows"], Format.table, title=f"{model}, batch {result['batch_size']}, {result['device']}")
    err.print(f"ours / baseline: [bold]{result['speedup']:.2f}×[/] images/s")
    if out:
        write_json(out, result)
    from rich.markup import escape

    from resrepro.train.bench_results import save_bench

    err.print(f"recorded for `sweep --dry-run` estimates: {escape(str(save_bench(result)))}", highlight=False)
