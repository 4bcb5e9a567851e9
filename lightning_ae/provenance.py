"""Where a result came from: the commit of the code and the machine it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent


def git_commit() -> str:
    """The short commit of this package's checkout, '+dirty' when tracked files differ; 'unknown' outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=_PACKAGE, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", str(_PACKAGE)],
            cwd=_PACKAGE,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}+dirty" if changed else commit


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare timings: processor, cores, OS, Python, torch's threads and device."""
    import torch

    return {
        "machine": platform.machine(),
        "processor": _cpu_model() or platform.processor() or "unknown",
        "cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
