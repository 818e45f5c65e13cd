"""Evaluate a trained CIFAR-style run (a run directory or a checkpoint file) on one split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resrepro.data.cifar import load_dataset, normalizer
from resrepro.errors import ResreproError
from resrepro.train.checkpoint import load_trained
from resrepro.train.loop import evaluate, resolve_device


def evaluate_run(path: str | Path, *, split: str | None = None, data_dir: str | Path | None = None,
                 device: str = "auto") -> dict[str, Any]:
    """Error and loss of the run's final weights. ``split``: "test", "val", or None for the run's own."""
    dev = resolve_device(device)
    spec, model = load_trained(path, dev)
    if split == "val" and spec.val_split == 0:
        raise ResreproError(f"{path} was trained on the whole training set: it has no val split; use --split test")
    val_split = spec.val_split if split in (None, "val") else 0
    splits = load_dataset(spec.dataset, data_dir or spec.data_dir, val_split=val_split, verify=spec.verify)
    mean, std = normalizer(splits.train, spec.normalize)
    spec = spec.replace(device=str(dev))
    loss, error = evaluate(model, splits.eval, spec, dev, mean, std)
    return {"run": str(path), "model": spec.model, "dataset": spec.dataset, "split": splits.eval_split,
            "error": error, "loss": loss, "images": len(splits.eval.labels)}
