"""Ensembles (Table 5): the softmax of several trained runs averaged image by image, as the paper combines its
nets. Each member goes through the one evaluation (``evaluate_run``), which keeps its probabilities; a table
reads the probabilities that evaluation wrote (``kept_ensemble``) instead of evaluating again."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from resrepro.errors import ResreproError
from resrepro.train.checkpoint import run_spec
from resrepro.train.evaluate import eval_path, evaluate_run, read_probabilities
from resrepro.train.metrics import Tally
from resrepro.train.runtime import resolve_device
from resrepro.train.spec import RunSpec


def check_members(paths: Sequence[str | Path]) -> list[RunSpec]:
    """The members' specs; a ResreproError unless they are runs of one family on one dataset."""
    if not paths:
        raise ResreproError("--ensemble needs the runs to combine: name run directories or checkpoints")
    specs = [run_spec(p) for p in paths]
    for path, spec in zip(paths[1:], specs[1:], strict=True):
        for what in ("family", "dataset"):
            if getattr(spec, what) != getattr(specs[0], what):
                raise ResreproError(f"{path} ({what} {getattr(spec, what)}) and {paths[0]} ({what} "
                                    f"{getattr(specs[0], what)}) cannot be combined: an ensemble averages nets of "
                                    f"one {what}")
    return specs


def evaluate_ensemble(paths: Sequence[str | Path], *, device: str = "auto", **evaluation: Any) -> dict[str, Any]:
    """Top-1/top-5 error and loss of the runs' averaged softmax, and each member's own result (``members``).

    ``evaluation``: what ``evaluate_run`` takes (split, protocol, data_dir, ...); every member is evaluated the
    same way, on the same images in the same order, or the ensemble is refused."""
    specs = check_members(paths)
    dev = resolve_device(device)
    members, kept = [], []
    for path in paths:
        tally = Tally(dev, top5=True, keep=True)
        members.append(evaluate_run(path, device=str(dev), tally=tally, **evaluation))
        kept.append(tally.probabilities())
    return _combine(paths, specs, members, kept)


def kept_ensemble(paths: Sequence[str | Path], protocol: str) -> dict[str, Any]:
    """What :func:`evaluate_ensemble` gives under ``protocol``, from the probabilities each member's own evaluation
    kept in RUN/eval/ (``resrepro eval RUN --<protocol>``, or a sweep): no net is built or run."""
    specs = check_members(paths)
    members, kept = [], []
    for path in paths:
        probs = read_probabilities(path, protocol)
        result = eval_path(path, protocol)
        if probs is None or not result.is_file():
            raise ResreproError(f"{path} has no kept {protocol} probabilities: `resrepro eval {path} --{protocol}` "
                                "makes them")
        members.append(json.loads(result.read_text()))
        kept.append(probs)
    return _combine(paths, specs, members, kept)


def _combine(paths: Sequence[str | Path], specs: Sequence[RunSpec], members: list[dict[str, Any]],
             kept: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """The ensemble's result from each member's result and (probabilities, targets), members in ``paths`` order."""
    total, targets = kept[0]
    for path, member, (probs, labels) in zip(paths[1:], members[1:], kept[1:], strict=True):
        if probs.shape != total.shape or not torch.equal(labels, targets):
            raise ResreproError(f"{path} was evaluated on other images or classes than {paths[0]} "
                                f"({member['split']}, {probs.shape[0]} images of {probs.shape[1]} classes "
                                f"vs {members[0]['split']}, {total.shape[0]} of {total.shape[1]}): give the runs "
                                "one split (--split) and one dataset")
        total = total + probs
    ensemble = Tally("cpu")
    ensemble.add_probs(total / len(paths), targets)
    first = members[0]
    shared = {k: first[k] for k in ("split", "protocol", "scales") if k in first}
    return {"run": [str(p) for p in paths], "model": " + ".join(m["model"] for m in members),
            "family": specs[0].family, "dataset": specs[0].dataset, **shared, **ensemble.result(),
            "members": members}
