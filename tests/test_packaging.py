"""A wheel built from this checkout works on its own: the experiments and the paper's tables ship inside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the build reads; the copy keeps the build's own files (build/, *.egg-info) out of the checkout.
SOURCES = ("resrepro", "experiments", "results/paper", "pyproject.toml", "README.md", "LICENSE")


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools", reason="builds the wheel offline with this environment's setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        src, dst = ROOT / name, tmp / "src" / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-q",
         "-w", str(tmp / "dist"), ".", cwd=tmp / "src")
    (path,) = (tmp / "dist").glob("resrepro-*.whl")
    return path


def test_wheel_holds_every_module_and_shipped_file(wheel):
    # pyproject.toml lists the packages by hand, so a new subpackage must be added there too.
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "resrepro").rglob("*.py")}
    assert modules - names == set(), "add the missing packages to [tool.setuptools] packages in pyproject.toml"
    experiments = ROOT / "experiments"  # the experiments and the groups' settings
    shipped = {f"resrepro/_shipped/experiments/{p.relative_to(experiments).as_posix()}"
               for p in experiments.rglob("*.toml")}
    shipped |= {f"resrepro/_shipped/paper/{p.name}" for p in (ROOT / "results" / "paper").glob("*.csv")}
    assert "resrepro/_shipped/experiments/groups/cifar10.toml" in shipped and shipped - names == set()


def test_wheel_carries_the_mit_license(wheel):
    # pyproject says MIT and names the file: the wheel's metadata must carry the text, not just the name.
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        (text,) = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert "License-Expression: MIT" in z.read(meta).decode()
        assert z.read(text).decode().startswith("MIT License")


def test_installed_wheel_runs_from_any_directory(wheel, tmp_path):
    site, elsewhere, runs = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "runs"
    elsewhere.mkdir()
    runs.mkdir()
    _run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(site),
         str(wheel), cwd=tmp_path)
    # Only the installed copy on the path, so the checkout (or its editable install) cannot stand in for it.
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = _run(sys.executable, "-c", "import resrepro; print(resrepro.__file__)", cwd=elsewhere, env=env)
    assert Path(where.strip()).is_relative_to(site)

    table = _run(sys.executable, "-m", "resrepro", "table", "table6", f"--runs={runs}", cwd=elsewhere, env=env)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ResNet")}
    assert "8.75" in rows["ResNet-20"] and "6.43 (6.61±0.16)" in rows["ResNet-110"]

    plan = _run(sys.executable, "-m", "resrepro", "sweep", "fig6", "--scale=tiny", f"--runs={runs}", "--dry-run",
                cwd=elsewhere, env=env)
    assert "resnet110-s0" in plan and "plain20-s0" in plan
    assert not any(runs.iterdir()) and not any(elsewhere.iterdir())
