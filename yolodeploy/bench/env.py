"""Capture the environment a benchmark ran in, so a result file says where its figures come from.

Optional libraries (onnx, onnxruntime, openvino, tensorrt) are looked up by their installed metadata; only those
that are installed are imported (onnxruntime for its execution providers, tensorrt for the version it reports), so
this never fails on a machine without them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
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


def _cpuinfo_fields() -> dict[str, str]:
    """First occurrence of a few /proc/cpuinfo fields (Linux); empty elsewhere."""
    wanted = {"cpu cores": "physical_cores_per_socket", "cpu MHz": "cpu_mhz", "flags": "flags"}
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in wanted and wanted[key] not in found:
                    found[wanted[key]] = value.strip()
    except OSError:
        pass
    return found


def _cpu_details() -> dict[str, Any]:
    info = _cpuinfo_fields()
    flags = set(info.get("flags", "").split())
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "neon") if f in flags]
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu_cores_per_socket": int(info["physical_cores_per_socket"]) if "physical_cores_per_socket" in info else None,
        "cpu_usable": usable,
        "cpu_mhz": float(info["cpu_mhz"]) if "cpu_mhz" in info else None,
        "cpu_simd": simd,
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def _gpu_details() -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"gpu_count": 0}
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu_count": torch.cuda.device_count(),
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "gpu_capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def _distribution_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _library_versions() -> dict[str, Any]:
    versions: dict[str, Any] = {
        "numpy": _distribution_version("numpy"),
        "onnx": _distribution_version("onnx"),
        "onnxruntime": _distribution_version("onnxruntime", "onnxruntime-gpu"),
        "openvino": _distribution_version("openvino"),
        "tensorrt": None,
        "onnxruntime_providers": None,
    }
    if versions["onnxruntime"] and importlib.util.find_spec("onnxruntime"):
        try:
            import onnxruntime

            versions["onnxruntime_providers"] = onnxruntime.get_available_providers()
        except Exception:  # a broken install must not stop a benchmark from recording what it can
            pass
    if importlib.util.find_spec("tensorrt"):
        try:
            import tensorrt

            versions["tensorrt"] = tensorrt.__version__
        except Exception:  # e.g. the bindings without libnvinfer: not importable, so not available
            pass
    return versions


def capture_environment() -> dict[str, Any]:
    """CPU (model, cores, usable CPUs, clock, SIMD), torch threads, GPU (if any) and library versions."""
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
    env.update(_cpu_details())
    env.update(_gpu_details())
    env.update(_library_versions())
    try:
        env["load_average"] = os.getloadavg()
    except OSError:
        pass
    return env
