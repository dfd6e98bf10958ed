"""Capture the environment a benchmark ran in, so a result file says where its figures come from."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from .. import __version__

__all__ = ["capture_environment"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def capture_environment() -> dict[str, Any]:
    """CPU, core count, torch threads, GPU (if any) and library versions."""
    env: dict[str, Any] = {
        "yolodeploy": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        env["load_average"] = os.getloadavg()
    except OSError:
        pass
    return env
