"""Evaluate a trained run of any family (a run directory or a checkpoint file): one ``evaluate_run``, one set
of result keys — ``top1_error``, ``top5_error`` where the family reports it (ImageNet), ``loss``, ``images``;
detection runs report ``map`` and per-class ``ap`` instead."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resrepro.errors import ResreproError
from resrepro.train.checkpoint import load_trained
from resrepro.train.metrics import Tally
from resrepro.train.runtime import resolve_device, use_channels_last
from resrepro.train.spec import CifarSpec, DetectionSpec, ImageNetSpec

PROTOCOLS = ("center", "ten-crop", "multi-scale")  # the ImageNet test protocols of §3.4
DETECTION_PROTOCOLS = ("voc07", "voc12", "coco")  # VOC2007 11-point AP, VOC2012 area AP, COCO mAP@[.5:.95]


def eval_path(run: str | Path, protocol: str) -> Path:
    """Where an ImageNet or detection run directory (or the one holding a checkpoint file) keeps a protocol's
    result."""
    run = Path(run)
    return (run if run.is_dir() else run.parent) / "eval" / f"{protocol}.json"


def evaluate_run(path: str | Path, *, split: str | None = None, protocol: str | None = None,
                 data_dir: str | Path | None = None, device: str = "auto", max_images: int | None = None,
                 scales: Sequence[int] | None = None, workers: int | None = None,
                 tally: Tally | None = None) -> dict[str, Any]:
    """The final weights' error and loss. CIFAR: on ``split`` ("test", "val", None for the run's own). ImageNet:
    under ``protocol`` (default "center") at the run's own sizes, on its val/ (``data_dir``: where that
    ImageFolder is now), written to :func:`eval_path` for the tables. ``tally``: the caller's, to keep each
    image's probabilities (an ensemble) or count top-5 on CIFAR. Detection: the test split's mAP under
    ``protocol`` (default: the dataset's benchmark), written to :func:`eval_path` too."""
    dev = resolve_device(device)
    spec, model = load_trained(path, dev)
    if isinstance(spec, DetectionSpec):
        if split is not None or max_images or scales:
            raise ResreproError(f"{path} is a detection run: it is evaluated on its test split with --protocol "
                                f"{'|'.join(DETECTION_PROTOCOLS)}")
        result = _evaluate_detection(spec, model, protocol, data_dir, dev)
    elif isinstance(spec, CifarSpec):
        if protocol not in (None, "center") or max_images or scales:
            raise ResreproError(f"{path} is a CIFAR run: --ten-crop/--multi-scale/--max-images are for ImageNet")
        result = _evaluate_cifar(spec, model, split, data_dir, dev, tally)
    elif protocol in DETECTION_PROTOCOLS:
        raise ResreproError(f"--protocol {protocol} is for detection runs; {path} is an ImageNet run")
    else:
        if split is not None:
            raise ResreproError("--split is for CIFAR runs; ImageNet runs are evaluated on DIR/val")
        result = _evaluate_imagenet(spec, model, protocol or "center", data_dir, dev, max_images, scales, workers,
                                    tally)
    result = {"run": str(path), "model": spec.model, "family": spec.family, "dataset": spec.dataset, **result}
    if isinstance(spec, ImageNetSpec | DetectionSpec):
        from resrepro.io import write_json

        write_json(eval_path(path, result["protocol"]), result)
    return result


def _evaluate_cifar(spec: CifarSpec, model, split: str | None, data_dir, dev, tally: Tally | None) -> dict[str, Any]:
    from resrepro.data.datasets import load_dataset
    from resrepro.data.pipeline import normalizer
    from resrepro.train.recipes.cifar import evaluate_set

    if split == "val" and spec.val_split == 0:
        raise ResreproError(f"{spec.model} was trained on the whole training set: it has no val split; "
                            "use --split test")
    val_split = spec.val_split if split in (None, "val") else 0
    splits = load_dataset(spec.dataset, data_dir or spec.data_dir, val_split=val_split, verify=spec.verify)
    mean, std = normalizer(splits.train, spec.normalize)
    channels_last = use_channels_last(spec.channels_last, dev)
    if channels_last:
        import torch

        model = model.to(memory_format=torch.channels_last)
    result = evaluate_set(model, splits.eval, spec.replace(device=str(dev)), dev, mean, std, channels_last, tally)
    return {"split": splits.eval_split, **result}


def _evaluate_detection(spec: DetectionSpec, model, protocol: str | None, data_dir, dev) -> dict[str, Any]:
    from resrepro.data.detection import load_detection
    from resrepro.train.recipes.detection import PROTOCOLS, detect, score

    protocol = protocol or PROTOCOLS[spec.dataset]
    if protocol not in DETECTION_PROTOCOLS:
        raise ResreproError(f"{spec.model} is a detection run: choose --protocol {' or '.join(DETECTION_PROTOCOLS)}")
    root = data_dir or spec.data_dir
    test_set = load_detection(spec.dataset, "test", Path(root).expanduser() if root else None)
    result = score(detect(model, test_set, dev, spec.precision), test_set, protocol)
    # A class without ground truth has AP NaN, which JSON cannot hold: null.
    result |= {k: {c: None if math.isnan(v) else v for c, v in result[k].items()}
               for k in ("ap", "ap50") if k in result}
    return {"split": "test", "protocol": protocol, **result, "images": len(test_set),
            "skipped_images": test_set.skipped}


def _evaluate_imagenet(spec: ImageNetSpec, model, protocol: str, data_dir, dev, max_images, scales,
                       workers, tally: Tally | None) -> dict[str, Any]:
    from resrepro.train.imagenet_eval import evaluate

    root = Path(data_dir).expanduser() if data_dir is not None else spec.data_root()
    sizes = tuple(scales or spec.test_scales)
    result = evaluate(model, root / "val", protocol, device=dev, normalize=spec.normalize, max_images=max_images,
                      scales=sizes, workers=spec.workers if workers is None else workers, resize=spec.scale[0],
                      crop=spec.crop, tally=tally)
    return {"split": "val", **result, **({"scales": list(sizes)} if protocol == "multi-scale" else {})}


def evaluate_import(name: str, weights: str | Path | None, *, data_dir: str | Path | None,
                    dataset: str | None = None, protocol: str = "center", device: str = "auto",
                    max_images: int | None = None, scales: Sequence[int] | None = None,
                    workers: int | None = None, verify: bool = True) -> dict[str, Any]:
    """Another project's model with a local weights file (see :mod:`resrepro.train.imports`): a CIFAR net on a
    CIFAR-style test set (``dataset``, default cifar10), with the error its project publishes beside ours; an
    ImageNet net under an ImageNet protocol at the paper's sizes. Printed only: nothing is written into the
    user's data folder. ``verify``: check the CIFAR-10 files' MD5 sums."""
    from resrepro.train.imports import import_model

    imported = import_model(name, weights)
    dev = resolve_device(device)
    head = {"run": str(weights), "model": name}
    if imported.family == "cifar" or dataset is not None:
        if protocol != "center" or max_images or scales:
            raise ResreproError(f"{name} is evaluated on a CIFAR test set: --ten-crop/--multi-scale/--max-images "
                                "are for ImageNet")
        result = _import_on_cifar(imported, name, dataset or "cifar10", data_dir, dev, verify)
        published = imported.published if (dataset or "cifar10") == "cifar10" else None
        return {**head, "family": "cifar", "dataset": dataset or "cifar10", **result,
                "published_top1_error": None if published is None else published / 100}
    from resrepro.train.imagenet_eval import MULTI_SCALES, evaluate

    if data_dir is None:
        raise ResreproError("--import needs --data-dir, the ImageNet folder holding val/")
    sizes = tuple(scales or MULTI_SCALES)
    result = evaluate(imported.model, Path(data_dir).expanduser() / "val", protocol, device=dev,
                      normalize=imported.normalize, max_images=max_images, scales=sizes,
                      workers=4 if workers is None else workers)
    return {**head, "family": "imagenet", "dataset": "imagenet", "split": "val", **result,
            **({"scales": list(sizes)} if protocol == "multi-scale" else {})}


def _import_on_cifar(imported, name: str, dataset: str, data_dir, dev, verify: bool) -> dict[str, Any]:
    """The one CIFAR evaluation (evaluate_set), in fp32: an imported net's error is measured, not approximated."""
    import torch

    from resrepro.data.datasets import load_dataset
    from resrepro.data.pipeline import normalizer
    from resrepro.train.recipes.cifar import evaluate_set

    splits = load_dataset(dataset, data_dir, verify=verify)
    mean, std = normalizer(splits.train, imported.normalize)
    model = imported.model.to(dev)
    try:  # one image first: a net made for other images fails here with a line, not deep in a batch
        with torch.no_grad():
            classes = model(((splits.eval.images[:1].float() - mean) / std).to(dev)).shape[1]
    except RuntimeError as e:
        raise ResreproError(f"{name} cannot take {dataset}'s images: {str(e).splitlines()[0]}") from None
    if classes != splits.eval.num_classes:
        raise ResreproError(f"{name} has {classes} outputs and {dataset} {splits.eval.num_classes} classes: it was "
                            "not trained for this test set")
    spec = CifarSpec(dataset=dataset, precision="fp32", device=str(dev))
    return {"split": splits.eval_split, **evaluate_set(model, splits.eval, spec, dev, mean, std)}
