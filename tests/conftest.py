"""What every test shares: a HOME of its own, so that nothing the code derives from ``~`` reaches the user's."""

from __future__ import annotations

from pathlib import Path

import pytest


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
