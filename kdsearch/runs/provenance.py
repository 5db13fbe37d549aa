"""Where a number came from: the command, the machine, the device, the software, the date."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch


def command_line() -> str:
    """The command as the user typed it: `kdsearch ...` from the console script, else the Python program."""
    program = Path(sys.argv[0])
    if program.name == "kdsearch" or (program.name == "__main__.py" and program.parent.name == "kdsearch"):
        return shlex.join(["kdsearch", *sys.argv[1:]])  # the console script, or python -m kdsearch
    return shlex.join(["python", *sys.argv])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def code_version() -> str:
    """kdsearch's version and, in a git checkout, the commit (+ "-dirty" with uncommitted changes)."""
    try:
        ours = version("kdsearch")
    except PackageNotFoundError:
        ours = "unknown"
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "kdsearch"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    return ours + (f" (commit {commit}{'-dirty' if dirty else ''})" if commit else "")


def environment(device: torch.device | str) -> dict[str, Any]:
    """Machine, device, threads and versions, recorded beside every result."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return {"machine": f"{cpu_model()}, {os.cpu_count()} CPUs", "device": f"{device.type} ({name})",
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "kdsearch": code_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
