"""How fast a planned run will train, for `sweep --dry-run`: a finished run of the same net first, then a
`resrepro bench` result, then the net's multiply-adds at an assumed rate. Each estimate says which it is."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resrepro.errors import ResreproError
from resrepro.train.bench_results import BENCH_FOLDERS, BenchFigure, macs_per_image, read_benches
from resrepro.train.families import family_of
from resrepro.train.rundir import SUMMARY, RunDir
from resrepro.train.spec import RunSpec

# Used only when nothing was measured, and said so. 10 TFLOP/s is an estimate of what a bf16 ResNet step sustains
# on a current data-centre GPU, not a measurement (no GPU has run this code yet); a CPU thread does 10-60 GFLOP/s
# in the CPU benches of results/bench (the small tiny-scale nets at the low end). Training costs ~3x the forward
# pass (backward: 2x), 2 FLOPs a MAC.
ASSUMED_FLOPS = {"cuda": 10e12, "cpu_thread": 20e9}  # a rough guess: off by 3-10x either way
TRAIN_FLOPS_PER_MAC = 6


@dataclass(frozen=True)
class Throughput:
    images_per_s: float
    source: str  # "runs: ...", "bench: ...", "FLOPs: ..."


def image_size(spec: RunSpec) -> int:
    """The side of the images a run trains on, as its family declares it (CIFAR-10 32, the tiny scale's digits
    16, ImageNet its crop, detection its shorter side)."""
    return family_of(spec).image_size(spec)


def measured_speeds(runs_root: Path) -> dict[tuple, float]:
    # Keyed by speed_key: (model, dataset, width).
    """Training images per second of every finished run under ``runs_root``, by (model, dataset, width)."""
    speeds: dict[tuple, float] = {}
    for summary in sorted(runs_root.rglob(SUMMARY)) if runs_root.is_dir() else []:
        try:
            rd = RunDir(summary.parent)
            s, config = rd.read_summary() or {}, rd.read_config()
        except ResreproError:
            continue  # a damaged run directory informs no estimate
        if not (isinstance(s, dict) and isinstance(config, dict)):
            continue
        if s.get("status") == "finished" and isinstance(s.get("images_per_s"), int | float):
            speeds.setdefault(speed_key(config), float(s["images_per_s"]))
    return speeds


def speed_key(config: dict[str, Any]) -> tuple:
    # Throughput depends on the net, the image size and the width; a tiny CPU run says nothing about a
    # full GPU run, so only runs that agree on all three inform an estimate.
    return config.get("model"), config.get("dataset"), config.get("width")


class Estimator:
    """Throughput of planned runs on ``device`` (the name `resrepro bench` records; default: this machine's)."""

    def __init__(self, runs_root: Path, bench_folders: tuple[str | Path, ...] | None = None,
                 device: tuple[str, str] | None = None) -> None:
        self.runs = measured_speeds(runs_root)
        self.benches = read_benches(BENCH_FOLDERS if bench_folders is None else bench_folders)
        self.device, self.device_type = device or _this_device()

    def __call__(self, spec: RunSpec) -> Throughput | None:
        measured = self.runs.get(speed_key(spec.to_dict()))
        if measured:
            return Throughput(measured, "runs: a finished run of this net")
        try:
            macs = macs_per_image(spec.model, spec.width, image_size(spec))
        except (ResreproError, RuntimeError):  # a model this resrepro cannot build: no guess
            return None
        sibling = self._sibling_run(spec, macs)
        if sibling is not None:
            return sibling
        bench = self._bench(spec, macs)
        if bench is not None:
            scaled = "" if bench.model == spec.model else ", scaled by multiply-adds"
            return Throughput(bench.images_per_s * bench.macs / macs, f"bench: {bench.describe()}{scaled}")
        rate = ASSUMED_FLOPS["cuda"] if self.device_type == "cuda" else ASSUMED_FLOPS["cpu_thread"] * _threads()
        return Throughput(rate / (TRAIN_FLOPS_PER_MAC * macs),
                          f"FLOPs: each net's multiply-adds at an assumed {rate / 1e9:,.0f} GFLOP/s on "
                          f"{self.device_type}, a rough guess (nothing measured; run `resrepro bench`)")

    def _sibling_run(self, spec: RunSpec, macs: int) -> Throughput | None:
        """A finished run of another net on the same data at the same width, scaled by multiply-adds: the same
        rule as for benches (see ``_bench``), and measured on this very machine's runs folder."""
        _, dataset, width = speed_key(spec.to_dict())
        scaled = []
        for (model, d, w), speed in self.runs.items():
            if (d, w) != (dataset, width):
                continue
            try:
                theirs = macs_per_image(model, width, image_size(spec))
            except (ResreproError, RuntimeError):
                continue
            scaled.append((abs(math.log(theirs / macs)), model, speed * theirs / macs))
        if not scaled:
            return None
        _, model, speed = min(scaled)
        return Throughput(speed, f"runs: a finished {model} run at this width, scaled by multiply-adds")

    def _bench(self, spec: RunSpec, macs: int) -> BenchFigure | None:
        """This machine's device before others (a GPU's before a CPU's: sweeps train on GPUs), the same net
        before another, in the precision the run would train in.

        Only a net of the same width on images of the same size stands in for another, scaled by
        multiply-adds: across depth the cost follows them, but a narrower net on smaller images is bound by
        per-layer overheads (ResNet-20's CPU bench scaled to the tiny scale's plain-20 said 7,900 images/s;
        the run did 270)."""
        family = family_of(spec).bench  # which `resrepro bench --family` times a comparable step
        if family is None:
            return None

        def rank(b: BenchFigure) -> tuple:
            return (b.device != self.device, b.device_type != "cuda", b.model != spec.model,
                    abs(math.log(b.macs / macs)))

        fits = [b for b in self.benches if (b.family, b.width, b.image_size) == (family, spec.width, image_size(spec))
                and b.macs > 0 and b.precision == _precision(spec.precision, b.device_type)]
        return min(fits, key=rank, default=None)


def _precision(precision: str, device_type: str) -> str:
    return ("bf16" if device_type == "cuda" else "fp32") if precision == "auto" else precision


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _this_device() -> tuple[str, str]:
    from resrepro.train.provenance import device_name
    from resrepro.train.runtime import resolve_device

    dev = resolve_device("auto")
    return device_name(dev), dev.type
