"""`resrepro train detection`: Faster R-CNN fine-tuned from an ImageNet backbone (appendix A, Tables 7-8)."""

from __future__ import annotations

from pathlib import Path

import typer

from resrepro.cli.common import choices, err
from resrepro.cli.train import (
    CHANNELS_LAST_HELP,
    TENSORBOARD_HELP,
    PrecisionChoice,
    _milestones,
    train_app,
    train_on_ranks,
)
from resrepro.train.spec import DetectionDataset, DetectionSpec

DetectionChoice = choices("DetectionChoice", DetectionDataset)


@train_app.command("detection")
def train_detection(
    backbone: str = typer.Option(DetectionSpec.model, help="The backbone: resnet101 (the paper's), vgg16, or any "
                                 "ImageNet net of `resrepro models` (resnet50, resnet101-v1.5, ...)."),
    dataset: DetectionChoice = typer.Option(DetectionSpec.dataset, help="voc07+12 (test: VOC07), voc07++12 (test: "
                                            "VOC12), coco (test: val2014), digits-voc / digits-coco (the tiny "
                                            "scale's, offline)."),
    data_dir: Path | None = typer.Option(None, help="Folder holding VOCdevkit/ or the COCO images and "
                                         "annotations/ (required for VOC and COCO; the digits sets are written "
                                         "on first use, by default to ~/.cache/resrepro/data/digits-detection)."),
    backbone_run: Path | None = typer.Option(None, help="Initialise the backbone from this finished `resrepro train "
                                             "imagenet` run directory (same net and width)."),
    backbone_import: str | None = typer.Option(None, help="Initialise it from a library's weights instead: "
                                               "torchvision:resnet101 (v1.5: stride on the 3×3), torchvision:vgg16; "
                                               "with --weights."),
    weights: Path | None = typer.Option(None, help="The local weights file of --backbone-import (nothing is "
                                        "downloaded)."),
    seed: int = typer.Option(0, help="Seed of the new layers' initialisation, image order and flips."),
    out: Path | None = typer.Option(None, help="Run directory (default: runs/det-<dataset>-<backbone>-s<seed>)."),
    iters: int | None = typer.Option(None, help="Iterations (default: the dataset's recipe: VOC 80k, COCO 320k)."),
    batch_size: int | None = typer.Option(None, help="Images per mini-batch over all processes (default: VOC 1, "
                                          "COCO 8)."),
    lr: float = typer.Option(DetectionSpec.lr, help="Base learning rate (paper: 0.001, then 0.0001)."),
    milestones: str | None = typer.Option(None, help="Iterations at which lr is divided by 10 (default: VOC 60k, "
                                          "COCO 240k)."),
    momentum: float = typer.Option(DetectionSpec.momentum, help="SGD momentum (paper: 0.9)."),
    weight_decay: float = typer.Option(DetectionSpec.weight_decay, help="Weight decay (Faster R-CNN: 5e-4)."),
    width: int = typer.Option(DetectionSpec.width, help="The backbone's first-stage filters (paper: 64)."),
    min_size: int = typer.Option(DetectionSpec.min_size, help="Shorter image side in pixels (paper: 600)."),
    max_size: int = typer.Option(DetectionSpec.max_size, help="Longer side at most (paper: 1000)."),
    anchor_sizes: str = typer.Option(",".join(map(str, DetectionSpec.anchor_sizes)), help="Anchor sides in pixels, "
                                     "each at ratios 1:2, 1:1, 2:1 (paper: 128,256,512)."),
    eval_every: int = typer.Option(DetectionSpec.eval_every, help="Test-split mAP every this many iterations."),
    workers: int = typer.Option(DetectionSpec.workers, help="Image-decoding processes per GPU."),
    precision: PrecisionChoice = typer.Option(DetectionSpec.precision, help="auto: bf16 autocast on CUDA, fp32 on "
                                              "CPU; every evaluation of the run uses it too."),
    channels_last: bool | None = typer.Option(False, "--channels-last/--no-channels-last", help=CHANNELS_LAST_HELP),
    device: str = typer.Option(DetectionSpec.device, help="auto, cpu, cuda, ... (under torchrun: each process's "
                               "own GPU)."),
    tensorboard: bool = typer.Option(False, help=TENSORBOARD_HELP),
    ranks: int = typer.Option(1, "--ranks", min=1, help="Train as this many processes on this machine (DDP; rank r "
                              "on cuda:r), each taking its share of every mini-batch. BN is frozen: no BN groups; a "
                              "run resumes only on the number of processes it started on."),
) -> None:
    """Fine-tune Faster R-CNN on VOC or COCO with the paper's recipe (appendix A); rerun to resume.

    RPN and Fast R-CNN are trained jointly in one step (torchvision's approximate joint training). Several GPUs:
    --ranks 8, or torchrun --nproc-per-node 8 -m resrepro train detection ... (DDP).
    """
    import json

    from resrepro.train.recipes.detection import pin_backbone

    spec = pin_backbone(DetectionSpec(
        model=backbone, dataset=dataset.value, seed=seed, iters=iters, batch_size=batch_size, lr=lr,
        milestones=None if milestones is None else _milestones(milestones), momentum=momentum,
        weight_decay=weight_decay, width=width, min_size=min_size, max_size=max_size,
        anchor_sizes=_milestones(anchor_sizes), eval_every=eval_every, checkpoint_every=eval_every,
        workers=workers, precision=precision.value, channels_last=channels_last, device=device,
        tensorboard=tensorboard, data_dir=str(data_dir) if data_dir else None,
        backbone_run=str(backbone_run) if backbone_run else None, backbone_import=backbone_import,
        weights=str(weights) if weights else None,
    ))
    out = out or Path("runs") / f"det-{spec.dataset}-{spec.model}-s{seed}"
    start = "from scratch" if spec.from_scratch else f"backbone {spec.backbone_hash}"
    summary = train_on_ranks(spec, out, device, f"[bold]Faster R-CNN {spec.model}[/] ({spec.dataset}, {start}, "
                             f"{spec.iters:,} iterations, {spec.batch_size} images per mini-batch", ranks)
    if summary is not None:
        final = summary["final"]
        err.print(f"done: test mAP ({final['eval_protocol']}) {100 * (1 - final['eval_error']):.2f}% after "
                  f"{summary['iter']:,} iterations")
        typer.echo(json.dumps({"run_dir": str(out), **final}))
