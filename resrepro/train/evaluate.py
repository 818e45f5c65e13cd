"""Evaluate a trained run of any family (a run directory or a checkpoint file): one ``evaluate_run``, one set
of result keys — ``top1_error``, ``top5_error`` where the family reports it (ImageNet), ``loss``, ``images``;
detection runs report ``map`` and per-class ``ap`` instead — and another project's weights (``evaluate_import``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from resrepro.errors import ResreproError
from resrepro.io import atomic_write, write_json
from resrepro.train.families import family_of, load_trained
from resrepro.train.metrics import Tally
from resrepro.train.recipe import EvalOptions
from resrepro.train.runtime import resolve_device
from resrepro.train.spec import CifarSpec


def eval_path(run: str | Path, protocol: str) -> Path:
    """Where a run directory (or the one holding a checkpoint file) keeps a protocol's result, for the families
    that keep them (``Family.keeps_eval``: ImageNet, detection)."""
    run = Path(run)
    return (run if run.is_dir() else run.parent) / "eval" / f"{protocol}.json"


def probs_path(run: str | Path, protocol: str) -> Path:
    """Where a kept protocol's per-image class probabilities and targets lie beside its result (an ensemble, Table
    5, averages them without running a net)."""
    return eval_path(run, protocol).with_suffix(".probs.pt")


def evaluated(run: str | Path, protocol: str) -> bool:
    """Whether the run holds its ``protocol`` result, and a classifier's result (top-1 error) its per-image
    probabilities too: an evaluation written before they were kept is made again."""
    result = eval_path(run, protocol)
    if not result.is_file():
        return False
    try:
        classifier = "top1_error" in json.loads(result.read_text())
    except (OSError, ValueError):
        return False
    return not classifier or probs_path(run, protocol).is_file()


def save_probabilities(path: Path, tally: Tally) -> None:
    """The tally's kept probabilities (N×K float32) and targets (N), atomically, loadable with weights_only."""
    probs, targets = tally.probabilities()
    atomic_write(path, lambda f: torch.save({"probs": probs.contiguous(), "targets": targets.contiguous()}, f))


def read_probabilities(run: str | Path, protocol: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The probabilities and targets :func:`evaluate_run` kept for ``protocol`` (None: not evaluated so yet)."""
    path = probs_path(run, protocol)
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return saved["probs"], saved["targets"]
    except (OSError, RuntimeError, KeyError, TypeError, EOFError) as e:
        raise ResreproError(f"{path} is unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__}): "
                            f"remove it and rerun `resrepro eval {Path(run)} --{protocol}`") from None


def evaluate_run(path: str | Path, *, split: str | None = None, protocol: str | None = None,
                 data_dir: str | Path | None = None, device: str = "auto", max_images: int | None = None,
                 scales: Sequence[int] | None = None, workers: int | None = None,
                 tally: Tally | None = None) -> dict[str, Any]:
    """The final weights' result, by the run's family (see its recipe module). CIFAR: error and loss on
    ``split`` ("test", "val", None for the run's own). ImageNet: under ``protocol`` (default "center") at the
    run's own sizes, on its val/ (``data_dir``: where that ImageFolder is now). Detection: the test split's mAP
    under ``protocol`` (default: the dataset's benchmark). ``tally``: the caller's, to keep each image's
    probabilities (an ensemble) or count top-5 on CIFAR. A family that keeps its results writes them to
    :func:`eval_path`, for the tables, and each image's class probabilities (where its evaluation has them) to
    :func:`probs_path`, for the ensemble of Table 5: written once here, read by every render."""
    dev = resolve_device(device)
    spec, model = load_trained(path, dev)
    family = family_of(spec)
    if protocol is not None and protocol not in family.protocols:
        raise ResreproError(f"{path} is a {family.name} run, evaluated with --protocol {'|'.join(family.protocols)}"
                            f", not {protocol}")
    if family.keeps_eval and tally is None:
        tally = Tally(dev, top5=True, keep=True)
    ask = EvalOptions(path=str(path), device=dev, split=split, protocol=protocol, data_dir=data_dir,
                      max_images=max_images, scales=scales, workers=workers, tally=tally)
    result = {"run": str(path), "model": spec.model, "family": spec.family, "dataset": spec.dataset,
              **family.evaluate(spec, model, ask)}
    if family.keeps_eval:
        # A classifier's probabilities first: a result on disk never lacks its own.
        if tally is not None and tally.kept:
            save_probabilities(probs_path(path, result["protocol"]), tally)
        write_json(eval_path(path, result["protocol"]), result)
    return result


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
