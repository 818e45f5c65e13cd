"""`resrepro eval`: a run (either family, any test protocol), several runs as an ensemble, or another
project's released weights."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from resrepro.cli.common import app
from resrepro.cli.train import DatasetChoice, _milestones


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
