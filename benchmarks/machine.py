"""What the benchmark results name the machine by: its CPU, cores, memory, GPU and versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info(device: torch.device, packages: tuple[str, ...]) -> dict[str, str]:
    """{what: description} of this machine and the versions of `packages` ("not installed")."""
    import torch  # here, not at the top: scripts that need only cpu_name do without it

    info = {
        "cpu": cpu_name(),
        "cores": f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable), torch "
                 f"threads {torch.get_num_threads()}",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    try:
        import psutil

        info["memory"] = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        pass
    info["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "none used"
    for package in packages:
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info
