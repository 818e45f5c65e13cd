"""Models to evaluate on ImageNet: a trained run of ours, or a torchvision/timm model for calibration; and a
run's evaluation under a test protocol of §3.4, written to RUN/eval/<protocol>.json for the tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from resrepro.errors import ResreproError
from resrepro.train.checkpoint import load_checkpoint
from resrepro.train.imagenet_spec import ImageNetSpec, data_root
from resrepro.train.rundir import RunDir


def is_imagenet_run(path: str | Path) -> bool:
    """Whether a run directory (its config.json) or checkpoint file holds an ImageNet run."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").exists():
        return RunDir(path).read_config().get("family") == "imagenet"
    return path.is_file() and load_checkpoint(path)["spec"].get("family") == "imagenet"


def load_trained_imagenet(path: str | Path) -> tuple[ImageNetSpec, torch.nn.Module]:
    """The spec and trained model (eval mode, CPU) of an ImageNet run directory or checkpoint file."""
    from resrepro.models.registry import resolve
    from resrepro.train.checkpoint import clean_state_dict

    state = load_checkpoint(path)
    spec = ImageNetSpec.from_dict(state["spec"])
    model = resolve(spec.model).build(num_classes=int(state["num_classes"]), width=spec.width)
    model.load_state_dict(clean_state_dict(state["model"]))
    return spec, model.eval()


def eval_path(run: str | Path, protocol: str) -> Path:
    """Where an ImageNet run directory (or the one holding a checkpoint file) keeps a protocol's result."""
    run = Path(run)
    return (run if run.is_dir() else run.parent) / "eval" / f"{protocol}.json"


def evaluate_run(run: str | Path, protocol: str, *, data_dir: str | Path | None = None, device: str = "auto",
                 max_images: int | None = None, scales: Sequence[int] | None = None,
                 workers: int | None = None) -> dict[str, Any]:
    """Top-1/top-5 error of a trained ImageNet run under ``protocol``, written to :func:`eval_path`.

    The images are the run's val/ (``data_dir`` overrides where its ImageFolder is) at the run's own sizes:
    shorter side ``scale[0]`` and ``crop`` for the center and 10 crops, ``test_scales`` (or ``scales``)
    for multi-scale. ``workers`` defaults to the run's.
    """
    from resrepro.data.imagenet_eval import evaluate
    from resrepro.io import write_json
    from resrepro.train.loop import resolve_device

    spec, model = load_trained_imagenet(run)
    root = Path(data_dir).expanduser() if data_dir is not None else data_root(spec)
    sizes = tuple(scales or spec.test_scales)
    result = evaluate(model, root / "val", protocol, device=resolve_device(device), normalize=spec.normalize,
                      max_images=max_images, scales=sizes, workers=spec.workers if workers is None else workers,
                      resize=spec.scale[0], crop=spec.crop)
    result = {"model": spec.model, **result, **({"scales": list(sizes)} if protocol == "multi-scale" else {})}
    write_json(eval_path(run, protocol), result)
    return result


def import_model(name: str, weights: str | Path | None) -> torch.nn.Module:
    """``torchvision:resnet50`` or ``timm:resnet50`` with the trained weights in ``weights``, a local state
    dict file. Nothing is ever downloaded; without weights it refuses, as random weights score chance."""
    from resrepro.train.checkpoint import clean_state_dict

    library, _, arch = name.partition(":")
    if library == "torchvision" and arch:
        import torchvision

        try:
            model = torchvision.models.get_model(arch, weights=None)
        except ValueError as e:
            raise ResreproError(f"--import {name}: {e}") from None
    elif library == "timm" and arch:
        import timm

        import resrepro.timm_models  # noqa: F401  (registers resrepro_<name>, so timm:resrepro_resnet50 works)

        if not timm.is_model(arch):
            raise ResreproError(f"--import {name}: timm has no model {arch!r}")
        model = timm.create_model(arch, pretrained=False)
    else:
        raise ResreproError(f"--import takes torchvision:NAME or timm:NAME (e.g. torchvision:resnet50), got {name!r}")
    if weights is None:
        raise ResreproError(f"--import {name} needs --weights FILE, a local copy of its trained weights: "
                            f"{_weights_file(library, arch)}; random weights would score chance")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise ResreproError(f"cannot read --weights {weights}: {e}") from None
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    try:
        model.load_state_dict(clean_state_dict(state))
    except (RuntimeError, AttributeError) as e:
        raise ResreproError(f"--weights {weights} do not fit {name}: {str(e).splitlines()[0]}") from None
    return model.eval()


def _weights_file(library: str, arch: str) -> str:
    """Which file holds a library model's ImageNet weights, for the message that asks for it."""
    if library == "torchvision":
        import torchvision

        try:
            url = torchvision.models.get_model_weights(arch).DEFAULT.url
        except (ValueError, AttributeError, KeyError):
            return "a state dict saved with torch.save(model.state_dict(), FILE)"
        return f"torchvision's {url.rsplit('/', 1)[-1]} ({url})"
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    source = f" (Hugging Face {cfg.hf_hub_id})" if cfg is not None and cfg.hf_hub_id else ""
    return f"timm's pretrained {arch}{source} saved with torch.save(model.state_dict(), FILE)"
