"""Checkpoints: dicts of tensors and plain types, written atomically, loadable with ``weights_only=True``.

Every checkpoint holds the spec of the run that wrote it; one that is not its run directory's own is refused
wherever it is loaded (resume, evaluation, layer responses), never used as that run."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from resrepro.errors import ResreproError
from resrepro.io import atomic_write
from resrepro.train.rundir import CHECKPOINT, CONFIG, RunDir, difference

if TYPE_CHECKING:
    from resrepro.train.spec import RunSpec

FORMAT = 1
# A run checkpoints at least this many times, and at every evaluation, whatever its checkpoint_every: a short run
# (the tiny scale's 600 iterations under the default 1000) would otherwise lose all of its work to a kill.
CHECKPOINTS_PER_RUN = 4


def checkpoint_interval(spec: RunSpec) -> int:
    """Iterations between checkpoints: ``checkpoint_every``, or less where the run is short (CHECKPOINTS_PER_RUN)
    or evaluates more often. A runtime choice: it changes neither the config hash nor any number of the run."""
    return max(1, min(spec.checkpoint_every, spec.eval_every, math.ceil(spec.iters / CHECKPOINTS_PER_RUN)))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write(path, lambda f: f.write(buf.getbuffer()))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise ResreproError(f"no checkpoint at {path}: train the run first (or point at a .pt file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as e:  # the file may be whole: only this user may not read it
        raise ResreproError(f"cannot read {path}: {e.strerror} — fix its permissions or run as its owner (the file "
                            "was not changed)") from None
    except Exception as e:  # torch raises several types for truncated or foreign files
        if path.name == CHECKPOINT and (path.parent / CONFIG).exists():  # a run's own: its run can start again
            raise ResreproError(f"checkpoint {path} is corrupt or not a resrepro checkpoint ({type(e).__name__}); "
                                "delete it to restart the run from its last good state") from None
        raise ResreproError(f"{path} is not a resrepro checkpoint ({type(e).__name__}): name a run directory or "
                            "the checkpoint.pt `resrepro train` wrote") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ResreproError(f"checkpoint {path} holds no model weights: not a resrepro checkpoint")
    return state


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the prefixes DataParallel/DDP (``module.``) and torch.compile (``_orig_mod.``) add, with torch's
    own helper (it also fixes the metadata's keys), on a copy: the caller's dict is left as it was."""
    from collections import OrderedDict

    from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

    state = OrderedDict(state)
    for prefix in ("module.", "_orig_mod.", "module."):  # a compiled DDP module nests them
        consume_prefix_in_state_dict_if_present(state, prefix)
    return state


def saved_spec(state: dict[str, Any], path: str | Path) -> RunSpec:
    """The spec of the run that wrote a checkpoint."""
    from resrepro.train.spec import spec_from_config

    if not isinstance(state.get("spec"), dict):
        raise ResreproError(f"{path} holds weights but no run specification, so resrepro cannot tell which net "
                            "they belong to: evaluate a run directory or a checkpoint written by `resrepro train`")
    try:
        return spec_from_config(state["spec"])
    except ResreproError as e:
        raise ResreproError(f"checkpoint {path}: {e}") from None


def check_config(saved: RunSpec, path: str | Path, spec: RunSpec, config: str | Path) -> None:
    """Raise unless a checkpoint (whose spec is ``saved``) belongs to the run its directory's config.json
    describes (``spec``). Hashes are recomputed from both specs, as the run directory's claim does."""
    if saved.config_hash() != spec.config_hash():
        raise ResreproError(
            f"{path} belongs to another run (config hash {saved.config_hash()}) than {config} (config hash "
            f"{spec.config_hash()}): {difference(saved, spec, 'in the checkpoint', 'in config.json')}; move the "
            "checkpoint away (nothing was used)")


def run_of(path: str | Path) -> RunDir | None:
    """The run directory whose config.json a run directory or its checkpoint.pt answers to; None for a
    checkpoint file with no config.json beside it."""
    path = Path(path)
    run = RunDir(path if path.is_dir() else path.parent)
    return run if (path.is_dir() or path.name == CHECKPOINT) and (run.path / CONFIG).exists() else None


def run_spec(path: str | Path) -> RunSpec:
    """The spec of a run directory (its config.json) or checkpoint file, without building its net."""
    run = run_of(path)
    return run.read_spec() if run is not None else saved_spec(load_checkpoint(path), path)


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)
