"""``yolodeploy env``: which backends and devices this machine has, with versions.

Every optional library is imported here and nowhere earlier, so ``import yolodeploy`` stays light.
"""

from __future__ import annotations

import importlib.util
import platform
from typing import Any

__all__ = ["environment_report", "format_environment_report"]


def _torch_entry() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    devices = []
    if cuda:
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            devices.append(
                {"index": index, "name": torch.cuda.get_device_name(index), "capability": f"{major}.{minor}"}
            )
    return {
        "available": True,
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "devices": devices,
        "threads": torch.get_num_threads(),
    }


def _onnxruntime_entry() -> dict[str, Any]:
    from .runners import onnxrt

    if not onnxrt.is_available():
        return {"available": False, "version": None, "reason": "not installed: pip install onnxruntime"}
    ort = onnxrt.import_onnxruntime()
    return {"available": True, "version": ort.__version__, "providers": list(ort.get_available_providers())}


def _tensorrt_entry() -> dict[str, Any]:
    from .runners import tensorrt_runner

    reason = tensorrt_runner.unavailable_reason()
    entry: dict[str, Any] = {"available": reason is None, "version": tensorrt_runner.get_version()}
    if reason is not None:
        entry["reason"] = reason
    return entry


def _openvino_entry() -> dict[str, Any]:
    if importlib.util.find_spec("openvino") is None:
        reason = "not installed (optional): pip install 'yolodeploy[openvino]'"
        return {"available": False, "version": None, "reason": reason}
    try:
        import openvino

        version = getattr(openvino, "__version__", None) or openvino.get_version()
        devices = list(openvino.Core().available_devices)
    except Exception as exc:  # a broken install must not break `yolodeploy env`
        return {"available": False, "version": None, "reason": f"import failed: {str(exc).splitlines()[0]}"}
    return {"available": True, "version": str(version), "devices": devices}


def environment_report() -> dict[str, Any]:
    """Python, platform, CPU, and per backend (torch, onnxruntime, tensorrt, openvino): availability, version,
    devices/providers, and for an unavailable backend the reason.

    Example:
        >>> environment_report()["backends"]["onnxruntime"]["providers"]
        ['CPUExecutionProvider']
    """
    from .. import __version__
    from ..bench.env import capture_environment

    machine = capture_environment()
    return {
        "yolodeploy": __version__,
        "python": platform.python_version(),
        "platform": machine.get("platform", platform.platform()),
        "cpu": machine.get("cpu", platform.processor()),
        "cpu_count": machine.get("cpu_count"),
        "backends": {
            "torch": _torch_entry(),
            "onnxruntime": _onnxruntime_entry(),
            "tensorrt": _tensorrt_entry(),
            "openvino": _openvino_entry(),
        },
    }


def format_environment_report(report: dict[str, Any]) -> list[str]:
    """The report as aligned text lines (what ``yolodeploy env`` prints)."""
    lines = [
        f"yolodeploy {report['yolodeploy']}, Python {report['python']}, {report['platform']}",
        f"CPU: {report['cpu']} ({report['cpu_count']} logical cores)",
    ]
    for name, entry in report["backends"].items():
        status = "yes" if entry["available"] else "no "
        version = entry.get("version") or "-"
        detail = _backend_detail(name, entry)
        lines.append(f"{name:<12} {status} {version:<16} {detail}".rstrip())
    return lines


def _backend_detail(name: str, entry: dict[str, Any]) -> str:
    if not entry["available"]:
        return entry.get("reason", "")
    if name == "torch":
        gpus = ", ".join(f"cuda:{d['index']} {d['name']} (sm {d['capability']})" for d in entry["devices"])
        build = f"CUDA build {entry['cuda_build']}" if entry["cuda_build"] else "CPU build"
        return f"{build}; {entry['threads']} threads; " + (f"GPUs: {gpus}" if gpus else "no CUDA device")
    if name == "onnxruntime":
        return "providers: " + ", ".join(entry["providers"])
    if name == "openvino":
        return "devices: " + ", ".join(entry["devices"])
    return ""
