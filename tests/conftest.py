"""What every test shares: a HOME of its own, so that nothing the code derives from ``~`` reaches the user's."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_USERS_HOME = os.environ.get("HOME")


def pytest_configure(config: pytest.Config) -> None:
    """A HOME for the whole session, set before the test modules are imported (some build a subprocess
    environment then: the Slurm tests' tasks) and so before module-scoped fixtures run (they are set up before
    each test's own HOME below: a tiny sweep in one would build its data in the user's ~/.cache)."""
    home = Path(tempfile.mkdtemp(prefix="resrepro-tests-home-"))
    (home / ".cache" / "resrepro").mkdir(parents=True)
    os.environ["HOME"] = str(home)


def pytest_unconfigure(config: pytest.Config) -> None:
    home = os.environ.get("HOME", "")
    if Path(home).name.startswith("resrepro-tests-home-"):
        shutil.rmtree(home, ignore_errors=True)
    if _USERS_HOME is not None:
        os.environ["HOME"] = _USERS_HOME


@pytest.fixture(scope="session")
def _session_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(autouse=True)
def _home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, _session_data: Path) -> Path:
    """A fresh HOME for each test (subprocesses inherit it). A bench the suite records would otherwise land in the
    user's ~/.cache/resrepro/bench and `sweep --dry-run` would plan from a 1-iteration figure. The data caches
    are shared through the session: the digits sets are built once, as they would be at home."""
    home = tmp_path_factory.mktemp("home")
    (home / ".cache" / "resrepro").mkdir(parents=True)
    (home / ".cache" / "resrepro" / "data").symlink_to(_session_data, target_is_directory=True)
    monkeypatch.setenv("HOME", str(home))
    return home
