"""`resrepro bench` results as the sweep planner reads them: recorded in :data:`BENCH_DIR` (and wherever
``--out`` names), read from there and ./results/bench/, where measured figures are committed."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resrepro.errors import ResreproError

BENCH_DIR = "~/.cache/resrepro/bench"
BENCH_FOLDERS = (BENCH_DIR, "results/bench")


@dataclass(frozen=True)
class BenchFigure:
    """One `resrepro bench` result as the planner uses it: our default training step's images/s."""

    model: str
    family: str
    width: int
    image_size: int
    device: str
    device_type: str  # cuda | cpu
    precision: str  # bf16 | fp32, as the step ran
    images_per_s: float
    macs: int  # forward multiply-adds of one image
    iters: int  # timed training steps: a figure of a few is noisy (and compile-bound), one of hundreds is not
    batch_size: int

    def describe(self) -> str:
        return f"{self.model} on {self.device}, {self.precision}, {self.iters:,} iterations of batch {self.batch_size}"


@functools.cache
def macs_per_image(model: str, width: int, size: int) -> int:
    from resrepro.models.registry import resolve
    from resrepro.models.summary import model_counts

    return model_counts(resolve(model), width=width, input_size=(3, size, size))[1]


def bench_figure(result: dict[str, Any]) -> dict[str, Any]:
    """What the planner needs from a bench result (``run_bench``'s dict): added to it before it is written."""
    from resrepro.models.registry import resolve

    spec = resolve(result["model"])
    width, size = (16, 32) if spec.family == "cifar" else (64, 224)  # what run_bench builds and feeds
    ours = result["rows"][1]  # our training step as `resrepro train` runs it by default
    label = ours.get("pipeline") or ours.get("stage") or ""
    return {"family": spec.family, "width": width, "image_size": size,
            "device_type": "cpu" if str(result["device"]).endswith("threads)") else "cuda",
            "precision": "bf16" if "bf16" in label else "fp32", "images_per_s": ours["images_per_s"],
            "macs": macs_per_image(spec.name, width, size)}


def save_bench(result: dict[str, Any], folder: str | Path | None = None) -> Path:
    """Record a bench result where the planner looks (default :data:`BENCH_DIR`): one file per model, device
    and precision, the latest replacing the one before."""
    from resrepro.io import write_json

    slug = re.sub(r"[^a-z0-9]+", "-", f"{result['device']}-{result['model']}-{result['precision']}".lower())
    path = Path(BENCH_DIR if folder is None else folder).expanduser() / f"{slug.strip('-')}.json"
    write_json(path, result)
    return path


def read_benches(folders: tuple[str | Path, ...]) -> list[BenchFigure]:
    """Every bench result in ``folders``; files that are no bench result are passed over."""
    figures = []
    for folder in folders:
        folder = Path(folder).expanduser()
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                result = json.loads(path.read_text())
                full = {**bench_figure(result), **result}  # files written before the planner read them lack some
                figures.append(BenchFigure(**{k: full[k] for k in BenchFigure.__dataclass_fields__}))
            except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, ResreproError):
                continue
    return figures
