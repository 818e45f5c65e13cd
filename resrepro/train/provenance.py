"""Where a result came from: code version, library versions and hardware (STYLE rule 14)."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 7B13"): Linux's /proc/cpuinfo, macOS's sysctl, else what Python knows.
    Training is chaotic, so two CPUs (Intel vs AMD kernels) give two outcomes: a reader needs to know which."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


def command() -> str:
    """The command line that is running, as a user would type it again."""
    name = Path(sys.argv[0]).name if sys.argv else ""
    head = "resrepro" if name in ("resrepro", "__main__.py", "-m", "-c") else name
    return shlex.join([head, *sys.argv[1:]])


def provenance(device: torch.device) -> dict[str, Any]:
    from resrepro import __version__

    return {
        "resrepro": __version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command(),
        "cpu": cpu_model(),
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": device_name(device),
        "host": platform.node(),
    }
