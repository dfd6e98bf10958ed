"""``build-engine --backend ort``: save ONNX Runtime's optimized graph, so sessions skip the optimization step.

ONNX Runtime writes the graph it will run through ``SessionOptions.optimized_model_filepath``. The default
level is ``extended`` (ORT_ENABLE_EXTENDED: constant folding, redundant-node elimination, Conv+activation and
other fusions). ``all`` adds layout transformations (NCHWc) that are specific to the CPU that ran them, so a
file saved at that level may not run, or not run well, on another machine; ONNX Runtime's docs advise against
saving it for reuse elsewhere. The result is an ordinary ``.onnx`` file (with ``com.microsoft`` fused ops) that
``OnnxRuntimeRunner`` loads like any other, plus a small sidecar ``<output>.json``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EngineError
from ..utils.io import atomic_path
from .runners.onnxrt import OnnxRuntimeRunner, ProviderSpec, import_onnxruntime
from .tensorrt_build import file_sha256, sidecar_path

__all__ = ["OrtBuildReport", "optimize_onnx", "default_output_path", "SAVE_LEVELS"]

SAVE_LEVELS = ("basic", "extended", "all")
SIDECAR_FORMAT = "yolodeploy-ort-model"


@dataclasses.dataclass
class OrtBuildReport:
    """What ``optimize_onnx`` wrote."""

    output_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]

    def lines(self) -> list[str]:
        s = self.sidecar
        return [
            f"{self.output_path}: ONNX Runtime {s['onnxruntime_version']} optimized graph "
            f"(level {s['optimization_level']}, providers {', '.join(s['providers'])}, "
            f"{s['nodes_before']} -> {s['nodes_after']} nodes, {s['build']['seconds']:.1f} s)",
            f"  sidecar: {self.sidecar_path}",
        ]


def default_output_path(onnx_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.ort.onnx``."""
    path = Path(onnx_path)
    return path.with_name(f"{path.stem}.ort.onnx")


def optimize_onnx(
    onnx_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    *,
    level: str = "extended",
    providers: Sequence[ProviderSpec] | None = None,
    threads: int | None = None,
) -> OrtBuildReport:
    """Save ONNX Runtime's optimized graph of ``onnx_path`` to ``output_path`` (default ``<stem>.ort.onnx``).

    Raises:
        ConfigError: an unknown level, or an output path that does not end in ``.onnx``.
        OnnxModelError / BackendUnavailableError: the ONNX cannot be loaded, or a provider is missing.

    Example:
        >>> optimize_onnx("yolov6n.onnx", "yolov6n.ort.onnx").lines()
    """
    if level not in SAVE_LEVELS:
        raise ConfigError(f"ONNX Runtime optimization level must be one of {', '.join(SAVE_LEVELS)}, got {level!r}")
    onnx_path = Path(onnx_path)
    output = Path(output_path) if output_path is not None else default_output_path(onnx_path)
    if output.suffix.lower() != ".onnx":
        raise ConfigError(f"{output}: the ONNX Runtime build writes an .onnx file; name the output *.onnx")
    if output.resolve() == onnx_path.resolve():
        raise ConfigError(f"{output}: the output would overwrite the input ONNX; choose another name")
    ort = import_onnxruntime()
    start = time.perf_counter()
    # The temporary name ends in .tmp, not .ort, so ONNX Runtime saves ONNX format; both files appear together.
    with atomic_path(output) as tmp, atomic_path(sidecar_path(output)) as tmp_sidecar:
        runner = OnnxRuntimeRunner(
            onnx_path, providers=providers, threads=threads, optimization_level=level, optimized_model_path=tmp
        )
        with runner:
            used_providers = runner.providers
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise EngineError(f"ONNX Runtime did not write the optimized model of {onnx_path}")
        sidecar = {
            "format": SIDECAR_FORMAT,
            "format_version": 1,
            "onnx": {"path": os.fspath(onnx_path), "sha256": file_sha256(onnx_path)},
            "onnxruntime_version": ort.__version__,
            "optimization_level": level,
            "providers": used_providers,
            "threads": threads,
            "nodes_before": _count_nodes(onnx_path),
            "nodes_after": _count_nodes(tmp),
            "build": {
                "seconds": round(time.perf_counter() - start, 3),
                "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
        }
        tmp_sidecar.write_text(json.dumps(sidecar, indent=2) + "\n")
    return OrtBuildReport(output, sidecar_path(output), sidecar)


def _count_nodes(path: Path) -> int:
    import onnx

    return len(onnx.load(os.fspath(path), load_external_data=False).graph.node)
