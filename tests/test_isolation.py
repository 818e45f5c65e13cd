"""The suite never writes outside its temp folders: `~` is a fresh folder for each test, subprocesses included."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

IMPORT_HOME = Path(os.environ["HOME"])  # what a module that builds a subprocess environment at import sees


def test_home_is_a_temp_folder_of_this_test(tmp_path_factory: pytest.TempPathFactory) -> None:
    assert Path("~").expanduser().is_relative_to(tmp_path_factory.getbasetemp())
    assert not Path("~/.cache/resrepro/bench").expanduser().exists()  # nothing left by another test


def test_a_subprocess_sees_the_temp_home() -> None:
    """`resrepro` run as a subprocess (as the CLI tests run it) records its benches under the same temp HOME."""
    r = subprocess.run([sys.executable, "-c", "from pathlib import Path; print(Path('~').expanduser())"],
                       capture_output=True, text=True, check=True)
    assert Path(r.stdout.strip()) == Path("~").expanduser()


@pytest.fixture(scope="module")
def module_home() -> Path:
    return Path("~").expanduser()  # set up before each test's own HOME, as a module's tiny sweep is


def test_home_is_a_temp_folder_even_at_import_and_in_a_module_fixture(module_home: Path) -> None:
    users = Path(pwd.getpwuid(os.getuid()).pw_dir)
    for home in (IMPORT_HOME, module_home):
        assert home != users and home.is_relative_to(tempfile.gettempdir()), home
