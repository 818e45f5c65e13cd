"""`resrepro train cifar|imagenet`, `resrepro eval`, `resrepro bench`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from resrepro.cli.common import app, check_output, choices, err
from resrepro.models.registry import IMAGENET_DEPTHS
from resrepro.train.spec import CifarDataset, CifarSpec, ImageNetSpec, Normalize, Precision, ZeroPad

train_app = typer.Typer(help="Train one network with the paper's recipe.", no_args_is_help=True)
app.add_typer(train_app, name="train")


class Shortcut(str, Enum):
    A = "A"
    B = "B"
    C = "C"


# The choices are the specs' own Literal types: declared once, there.
DatasetChoice = choices("DatasetChoice", CifarDataset)
NormalizeChoice = choices("NormalizeChoice", Normalize)
PrecisionChoice = choices("PrecisionChoice", Precision)
ZeroPadChoice = choices("ZeroPadChoice", ZeroPad)
CHANNELS_LAST_HELP = ("NHWC memory layout (default: on for CUDA; off on a CPU, where torch 2.14 aborts on some "
                      "NHWC shapes — `resrepro bench` times both). Same numbers up to float rounding.")
TENSORBOARD_HELP = "Also log to RUN/tensorboard (needs the extra: pip install 'resrepro[tensorboard]')."


def _milestones(text: str) -> tuple[int, ...]:
    from resrepro.errors import ResreproError

    try:
        return tuple(int(m) for m in text.split(",") if m.strip())
    except ValueError:
        raise ResreproError(f"--milestones takes comma-separated iterations, e.g. 32000,48000; got {text!r}") from None


@train_app.command("cifar")
def train_cifar(
    n: int = typer.Option(3, "--n", help="Blocks per stage: depth 6n+2 (3→20, 5→32, 7→44, 9→56, 18→110, 200→1202)."),
    plain: bool = typer.Option(False, "--plain", help="The plain counterpart: same layers, no shortcuts."),
    shortcut: Shortcut = typer.Option(Shortcut.A, help="Shortcut option: A zero-pad identity (paper's CIFAR choice), "
                                      "B projection where dimensions grow, C projection everywhere."),
    zero_pad: ZeroPadChoice = typer.Option(CifarSpec.zero_pad, help="Option A: where the extra zero channels go. "
                                           "append: after the input's channels (the paper's reading); split: half "
                                           "before and half after, as the akamaster CIFAR ResNets do."),
    seed: int = typer.Option(0, help="Seed of initialisation, data order and augmentation."),
    out: Path | None = typer.Option(None, help="Run directory (default: runs/<model>-s<seed>). If it holds this "
                                    "run, training resumes from its checkpoint."),
    dataset: DatasetChoice = typer.Option(CifarSpec.dataset, help="cifar10 (the paper's), digits (real 16×16 images, "
                                    "offline; the tiny scale) or synthetic (smoke tests)."),
    data_dir: Path | None = typer.Option(
        None, help="Folder holding cifar-10-batches-py/ (default: ~/.cache/resrepro/data)."),
    download: bool = typer.Option(False, "--download",
                                  help="Download CIFAR-10 into --data-dir first (needs the network)."),
    skip_checksum: bool = typer.Option(False, "--skip-checksum",
                                       help="Do not verify the CIFAR-10 files' MD5 sums (for a modified copy)."),
    iters: int = typer.Option(CifarSpec.iters, help="Training iterations (paper: 64k)."),
    batch_size: int = typer.Option(CifarSpec.batch_size, help="Mini-batch size (paper: 128)."),
    lr: float = typer.Option(CifarSpec.lr, help="Base learning rate (paper: 0.1)."),
    milestones: str = typer.Option(",".join(map(str, CifarSpec.milestones)),
                                   help="Iterations at which lr is divided by 10 (paper: 32k, 48k)."),
    momentum: float = typer.Option(CifarSpec.momentum, help="SGD momentum (paper: 0.9)."),
    weight_decay: float = typer.Option(CifarSpec.weight_decay, help="Weight decay (paper: 1e-4)."),
    warmup: bool | None = typer.Option(None, "--warmup/--no-warmup", help="Hold lr at 0.01 until training error "
                                       "< 80%, then use --lr (paper: ResNet-110) (default: on for n >= 18)."),
    normalize: NormalizeChoice = typer.Option(CifarSpec.normalize, help="pixel-mean (paper) or mean-std (peer "
                                              "style)."),
    augment: bool = typer.Option(CifarSpec.augment, help="Pad-4 random crop and horizontal flip (paper)."),
    val_split: int = typer.Option(CifarSpec.val_split, help="Hold out this many training images and report error "
                                  "on them instead of the test set (paper: 5000, to choose the schedule)."),
    width: int = typer.Option(CifarSpec.width, help="First-stage filters (paper: 16)."),
    eval_every: int = typer.Option(CifarSpec.eval_every, help="Evaluate, log and checkpoint every this many "
                                   "iterations."),
    precision: PrecisionChoice = typer.Option(CifarSpec.precision, help="auto: bf16 autocast on CUDA, fp32 on CPU."),
    compile: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile (default: on for CUDA)."),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last", help=CHANNELS_LAST_HELP),
    device: str = typer.Option(CifarSpec.device, help="auto, cpu, cuda, cuda:1, ..."),
    grad_checkpoint: bool = typer.Option(False, "--grad-checkpoint", help="Recompute activations per stage in "
                                         "backward (ResNet-1202 on small GPUs): same result, less memory, more time."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help=TENSORBOARD_HELP),
) -> None:
    """Train one CIFAR-10 net (6n+2 layers) with the paper's recipe (§4.2).

    Rerun the same command to resume from its last checkpoint: an interrupted run ends with the same numbers.

    A finished run is not retrained; a directory holding a run with other settings is refused, never overwritten.
    """
    import json

    from resrepro.models.registry import cifar_spec

    model = cifar_spec(n, plain=plain, shortcut=shortcut.value).name
    spec = CifarSpec(
        model=model, dataset=dataset.value, seed=seed, iters=iters, batch_size=batch_size, lr=lr,
        momentum=momentum, weight_decay=weight_decay, milestones=_milestones(milestones), warmup=warmup,
        augment=augment, normalize=normalize.value, val_split=val_split, width=width, eval_every=eval_every,
        checkpoint_every=eval_every, precision=precision.value, grad_checkpoint=grad_checkpoint,
        data_dir=str(data_dir) if data_dir else None, device=device, compile=compile, channels_last=channels_last,
        tensorboard=tensorboard, verify=not skip_checksum, zero_pad=zero_pad.value,
    )
    out = out or Path("runs") / f"{model}-s{seed}"
    check_output(out, folder=True)
    # Only now torch (seconds to import): a mistyped argument above was answered at once.
    from resrepro.data.cifar import load_dataset
    from resrepro.train.loop import train
    from resrepro.train.runtime import resolve_device

    resolve_device(spec.device)  # a device that is not here is one line, before anything is printed or loaded
    if download:
        load_dataset("cifar10", data_dir, download=True, verify=not skip_checksum)
    layout = ", option A zeros split" if spec.zero_pad == "split" else ""
    err.print(f"[bold]{model}[/] ({spec.dataset}, {spec.iters:,} iterations, warm-up "
              f"{'on' if spec.uses_warmup else 'off'}{layout}) → {out}")
    summary = train(spec, out, progress=True)
    final = summary["final"]
    err.print(f"done: train error {100 * final['train_error']:.2f}%, {final['eval_split']} error "
              f"{100 * final['eval_error']:.2f}% after {summary['iter']:,} iterations")
    typer.echo(json.dumps({"run_dir": str(out), **final}))


@train_app.command("imagenet")
def train_imagenet(
    depth: int = typer.Option(34, metavar="|".join(map(str, IMAGENET_DEPTHS)),
                              help="18, 34 (basic blocks), 50, 101, 152 (bottlenecks) (Table 1)."),
    plain: bool = typer.Option(False, "--plain", help="The plain counterpart (18 and 34 layers in the paper)."),
    shortcut: Shortcut = typer.Option(Shortcut.B, help="A zero-pad identity (Table 2), B projection where "
                                      "dimensions grow (paper's choice for 50+), C projection everywhere."),
    stride_in_3x3: bool = typer.Option(False, "--stride-in-3x3", help="Bottleneck stride on the 3×3 "
                                       "(torchvision's v1.5); the paper strides the first 1×1."),
    data_dir: Path | None = typer.Option(None, help="ImageNet as DIR/train/<wnid>/ and DIR/val/<wnid>/ "
                                         "(default: ~/.cache/resrepro/data/imagenet)."),
    seed: int = typer.Option(0, help="Seed of initialisation, data order and augmentation."),
    out: Path | None = typer.Option(None, help="Run directory (default: runs/<model>-s<seed>)."),
    iters: int = typer.Option(ImageNetSpec.iters, help="Training iterations (paper: 600k)."),
    batch_size: int = typer.Option(ImageNetSpec.batch_size, help="Global mini-batch over all processes (paper: "
                                   "256)."),
    lr: float = typer.Option(ImageNetSpec.lr, help="Base learning rate (paper: 0.1)."),
    milestones: str = typer.Option(",".join(map(str, ImageNetSpec.milestones)), help="Iterations at which lr is "
                                   "divided by 10. Deviation: the paper divides 'when the error plateaus'; these "
                                   "are ~30/60/90 epochs."),
    momentum: float = typer.Option(ImageNetSpec.momentum, help="SGD momentum (paper: 0.9)."),
    weight_decay: float = typer.Option(ImageNetSpec.weight_decay, help="Weight decay (paper: 1e-4)."),
    normalize: NormalizeChoice = typer.Option(ImageNetSpec.normalize, help="pixel-mean (paper) or mean-std."),
    num_classes: int | None = typer.Option(None, help="Model outputs (default: one per class folder)."),
    width: int = typer.Option(ImageNetSpec.width, help="conv1/conv2_x filters (paper: 64); smaller for tiny runs."),
    accumulate: int = typer.Option(ImageNetSpec.accumulate, help="Micro-batches per process per step (BN "
                                   "statistics per micro-batch, as on that many GPUs)."),
    eval_every: int = typer.Option(ImageNetSpec.eval_every, help="Center-crop validation and checkpoint every this "
                                   "many iterations."),
    workers: int = typer.Option(ImageNetSpec.workers, help="Data-loading processes per GPU."),
    precision: PrecisionChoice = typer.Option(ImageNetSpec.precision, help="auto: bf16 autocast on CUDA, fp32 on "
                                              "CPU."),
    compile: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile (default: on for CUDA)."),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last", help=CHANNELS_LAST_HELP),
    device: str = typer.Option(ImageNetSpec.device, help="auto, cpu, cuda, ... (under torchrun: each process's own "
                               "GPU)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help=TENSORBOARD_HELP),
) -> None:
    """Train one ImageNet net (18-152 layers) with the paper's recipe (§3.4); rerun to resume.

    Several GPUs: torchrun --nproc-per-node 8 -m resrepro train imagenet ... (DDP, BN per GPU as in the paper).
    """
    import json
    import os

    from resrepro.models.registry import model_name

    # torchrun's documented interface: WORLD_SIZE, RANK, LOCAL_RANK in each process's environment.
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    model = model_name("imagenet", depth, plain, None if plain else shortcut.value, not stride_in_3x3)
    spec = ImageNetSpec(
        model=model, seed=seed, iters=iters, batch_size=batch_size, lr=lr, momentum=momentum,
        weight_decay=weight_decay, milestones=_milestones(milestones), normalize=normalize.value,
        num_classes=num_classes, width=width, accumulate=accumulate, eval_every=eval_every,
        checkpoint_every=eval_every, workers=workers, precision=precision.value, compile=compile,
        channels_last=channels_last, device=device, tensorboard=tensorboard,
        data_dir=str(data_dir) if data_dir else None,
    )
    out = out or Path("runs") / f"{model}-s{seed}"
    check_output(out, folder=True)
    from resrepro.train.loop import init_distributed, train  # torch, once the arguments are known to be good
    from resrepro.train.runtime import resolve_device

    if world > 1:
        spec = spec.replace(device=init_distributed(int(os.environ.get("LOCAL_RANK", "0")), device))
    else:
        resolve_device(spec.device)  # a device that is not here is one line, before anything is printed
    if rank == 0:
        err.print(f"[bold]{model}[/] (ImageNet, {spec.iters:,} iterations, batch {spec.batch_size} over {world} "
                  f"process{'es' if world > 1 else ''}) → {out}")
    try:
        summary = train(spec, out, progress=rank == 0)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank == 0:
        final = summary["final"]
        err.print(f"done: train error {100 * final['train_error']:.2f}%, val error (center crop) "
                  f"{100 * final['eval_error']:.2f}% after {summary['iter']:,} iterations")
        typer.echo(json.dumps({"run_dir": str(out), **final}))


class Split(str, Enum):
    test = "test"
    val = "val"


class DetectionProtocol(str, Enum):
    voc07 = "voc07"
    voc12 = "voc12"
    coco = "coco"


class OutFormat(str, Enum):
    text = "text"
    json = "json"


IMPORT_HELP = ("Evaluate another project's trained net instead of a run: akamaster:resnet20|32|44|56|110|1202 (its "
               "CIFAR-10 .th files), resrepro:NAME (our net, e.g. resrepro:resnet56), torchvision:NAME or "
               "timm:NAME. CIFAR nets are tested on the CIFAR-10 test set, ImageNet nets on --data-dir/val. The "
               "name fixes option A's layout, which the file cannot show: akamaster: puts the zero channels half "
               "before and half after, resrepro: (and timm:resrepro_NAME) after; the wrong one loads without "
               "complaint and computes another function.")


@app.command("eval")
def eval_(
    runs: list[Path] | None = typer.Argument(None, help="A run directory or a checkpoint file; several with "
                                             "--ensemble; none with --import."),
    split: Split | None = typer.Option(None, help="CIFAR: test, or val (the run's held-out split) "
                                       "(default: the run's)."),
    data_dir: Path | None = typer.Option(None, help="Where the dataset is, if not where the run had it "
                                         "(ImageNet: the folder holding val/)."),
    center: bool = typer.Option(False, "--center", help="ImageNet: shorter side 256, center 224 crop (default; a "
                            "run is tested at its own sizes)."),
    ten_crop: bool = typer.Option(False, "--ten-crop", help="ImageNet: 10-crop testing (Tables 2-3)."),
    multi_scale: bool = typer.Option(False, "--multi-scale", help="ImageNet: fully-convolutional multi-scale "
                                     "testing, shorter side 224..640 (Table 4)."),
    protocol_: DetectionProtocol | None = typer.Option(None, "--protocol", help="Detection: voc07 (11-point AP), "
                                                       "voc12 (area AP), coco (mAP@[.5:.95]) (default: the run's "
                                                       "dataset's)."),
    ensemble: bool = typer.Option(False, "--ensemble", help="Average the softmax of the runs named, image by "
                                  "image (Table 5), and show the ensemble's error beside each run's."),
    import_: str | None = typer.Option(None, "--import", help=IMPORT_HELP),
    weights: Path | None = typer.Option(None, help="Required with --import: a local file of its trained weights "
                                        "(a state dict, or akamaster's .th file); nothing is downloaded."),
    dataset: DatasetChoice | None = typer.Option(None, help="With --import: the CIFAR-style test set "
                                                 "(default: cifar10 for CIFAR nets)."),
    skip_checksum: bool = typer.Option(False, help="With --import: do not verify the CIFAR-10 files' MD5 sums."),
    max_images: int | None = typer.Option(None, help="ImageNet: evaluate this many val images, spread evenly."),
    workers: int | None = typer.Option(None, help="ImageNet: data-loading processes (default: the run's; 4 "
                                       "with --import)."),
    scales: str | None = typer.Option(None, hidden=True, help="Multi-scale shorter sides, e.g. 64,96 (tests)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    fmt: OutFormat = typer.Option(OutFormat.text, "--format", help="text or json."),
) -> None:
    """Evaluate a run: CIFAR error on test/val, ImageNet top-1/top-5 under a test protocol of §3.4, or a
    detection run's test mAP (per-class AP in the file).

    An ImageNet or detection run's result is also written to RUN/eval/<protocol>.json, which the tables read. With
    --ensemble, several runs' averaged softmax; with --import, another project's released weights.
    """
    import json

    from resrepro.errors import ResreproError
    from resrepro.train.imports import parse_import

    if import_ is not None:
        parse_import(import_)  # a mistyped library is one line before torch is imported
    from resrepro.train.evaluate import evaluate_import, evaluate_run

    chosen = [p for p, on in (("center", center), ("ten-crop", ten_crop), ("multi-scale", multi_scale)) if on]
    chosen += [protocol_.value] if protocol_ else []
    if len(chosen) > 1:
        raise ResreproError("choose one of --center, --ten-crop, --multi-scale, --protocol")
    protocol = chosen[0] if chosen else None
    sizes = None if scales is None else _milestones(scales)
    runs = runs or []
    common = dict(data_dir=data_dir, device=device, max_images=max_images, scales=sizes, workers=workers)
    if import_ is not None:
        if runs or ensemble:
            raise ResreproError("--import evaluates another project's model: give no run directory with it")
        result = evaluate_import(import_, weights, protocol=protocol or "center", verify=not skip_checksum,
                                 dataset=dataset.value if dataset else None, **common)
    elif not runs:
        raise ResreproError("name a run directory or checkpoint to evaluate (or --import a library model)")
    elif weights is not None or dataset is not None:
        raise ResreproError("--weights and --dataset go with --import; a run holds its own weights and dataset")
    elif ensemble:
        from resrepro.train.ensemble import evaluate_ensemble

        result = evaluate_ensemble(runs, split=split.value if split else None, protocol=protocol, **common)
    elif len(runs) > 1:
        raise ResreproError(f"{len(runs)} runs named: evaluate one at a time, or add --ensemble to combine them")
    else:
        result = evaluate_run(runs[0], split=split.value if split else None, protocol=protocol, **common)
    if fmt is OutFormat.json:
        typer.echo(json.dumps(result))
        return
    if "map" in result:
        typer.echo(f"{result['model']} on {result['dataset']}/test ({result['protocol']}): mAP "
                   f"{100 * result['map']:.2f}% ({result['images']} images)")
        return
    for member in result.get("members", []):
        typer.echo(f"  {_result_line(member)}  [{member['run']}]")
    typer.echo(("ensemble: " if ensemble else "") + _result_line(result))


def _result_line(result: dict) -> str:
    top5 = f", top-5 error {100 * result['top5_error']:.2f}%" if "top5_error" in result else ""
    how = f" ({result['protocol']})" if "protocol" in result else ""
    published = result.get("published_top1_error")
    theirs = "" if published is None else f" (its project publishes {100 * published:.2f}%)"
    return (f"{result['model']} on {result['dataset']}/{result['split']}{how}: top-1 error "
            f"{100 * result['top1_error']:.2f}%{theirs}{top5}, loss {result['loss']:.4f} ({result['images']} images)")


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
    backbone: list[str] | None = typer.Option(None, help="Detection backbones to time side by side (repeat the "
                                              "option; default: resnet101 and vgg16)."),
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

    from resrepro.throughput import save_bench

    err.print(f"recorded for `sweep --dry-run` estimates: {escape(str(save_bench(result)))}", highlight=False)
