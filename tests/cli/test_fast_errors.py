"""A mistyped argument is answered before torch is imported: one line, exit 2, in a fraction of torch's import."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "timm", "pandas", "matplotlib")
CASES = [
    (("train", "imagenet", "--depth", "42"), "resnet42 is not an ImageNet net: ImageNet depths are 18, 34, 50"),
    (("train", "imagenet", "--plain", "--depth", "19"), "plain19 is not an ImageNet net"),
    (("train", "cifar", "--n", "0"), "n must be at least 1 and at most 1000"),
    (("train", "cifar", "--shortcut", "D"), "'D' is not one of 'A', 'B', 'C'"),
    (("bench", "--model", "resnet43"), "'resnet43': a CIFAR net has depth 6n+2"),
    (("bench", "--model", "resnte20"), "unknown model 'resnte20'"),
    (("sweep", "fig66", "--dry-run"), "unknown experiment 'fig66'"),
    (("sweep", "fig6", "--scale", "medium", "--dry-run"), "has no scale 'medium': choose full, tiny"),
    (("eval", "--import", "tv:resnet50"), "--import takes akamaster:NAME, resrepro:NAME"),
    (("figure", "fig9"), "'fig9' is not one of"),
]


def _run(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    return done, time.perf_counter() - start


@pytest.fixture(scope="module")
def torch_import_s(tmp_path_factory) -> float:
    done, seconds = _run(["-c", "import torch"], tmp_path_factory.mktemp("torch"))
    assert done.returncode == 0
    return seconds


@pytest.mark.parametrize(("args", "message"), CASES, ids=lambda c: " ".join(c) if isinstance(c, tuple) else "")
def test_bad_argument_is_one_line_before_torch(args, message, tmp_path, torch_import_s):
    done, seconds = _run(["-m", "resrepro", *args], tmp_path)
    imported = set(re.findall(r"^import time:.*\|\s+([\w.]+)$", done.stderr, re.M))
    lines = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not imported & set(HEAVY), f"imported {sorted(imported & set(HEAVY))} before checking the arguments"
    assert seconds < torch_import_s  # interpreter start-up included on both sides
    assert not any(tmp_path.iterdir())  # nothing written
