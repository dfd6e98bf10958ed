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
        lines = [
            f"{self.output_path}: ONNX Runtime {s['onnxruntime_version']} optimized graph "
            f"(level {s['optimization_level']}, providers {', '.join(s['providers'])}, "
            f"{s['nodes_before']} -> {s['nodes_after']} nodes, {s['build']['seconds']:.1f} s)",
            f"  sidecar: {self.sidecar_path}",
        ]
        tactics = s.get("conv_tactics")
        if tactics is not None:
            saved = sum(c["symmetric_us"] - c["gemm_us"] for c in tactics["convs"] if c["gemm_chosen"]) / 1e3
            lines.append(
                f"  conv kernels tuned at batch {tactics['batch']}: GEMM kernel for {tactics['gemm_chosen']} of "
                f"{tactics['timed']} int8 convs, the others symmetric (timed alone: {saved:.2f} ms less per call)"
            )
            lines.append(_whole_model_line(tactics))
        return lines


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
    tune_batch: int | None = None,
) -> OrtBuildReport:
    """Save ONNX Runtime's optimized graph of ``onnx_path`` to ``output_path`` (default ``<stem>.ort.onnx``).

    With ``tune_batch``, each int8 conv first gets the faster of ONNX Runtime's two int8 conv kernels on this
    machine at that batch (:func:`yolodeploy.deploy.ort_tactics.tune_conv_kernels`; exact), and the sidecar
    records the timings under ``conv_tactics``.

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
    source, tactics = _tuned_source(onnx_path, tune_batch, threads)
    # The temporary name ends in .tmp, not .ort, so ONNX Runtime saves ONNX format; both files appear together.
    with atomic_path(output) as tmp, atomic_path(sidecar_path(output)) as tmp_sidecar:
        runner = OnnxRuntimeRunner(
            source, providers=providers, threads=threads, optimization_level=level, optimized_model_path=tmp
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
        if tactics is not None:
            sidecar["conv_tactics"] = tactics
        tmp_sidecar.write_text(json.dumps(sidecar, indent=2) + "\n")
    return OrtBuildReport(output, sidecar_path(output), sidecar)


def _whole_model_line(tactics: dict) -> str:
    whole = tactics["whole_model"]
    if whole is None:
        return "  no conv runs faster on the GEMM kernel here: the graph is saved as it was"
    figures = f"{whole['original_ms']:.2f} -> {whole['tuned_ms']:.2f} ms per call, ratio {whole['ratio']:.3f}"
    verdict = "saved tuned" if tactics["kept"] else "not faster as a whole: the graph is saved untuned"
    return f"  whole model at batch {tactics['batch']}: {figures} ({verdict})"


def _tuned_source(onnx_path: Path, tune_batch: int | None, threads: int | None) -> tuple[Any, dict | None]:
    """``onnx_path`` itself, or its model with the conv kernels tuned at ``tune_batch`` and the sidecar record."""
    if tune_batch is None:
        return onnx_path, None
    from .onnx_utils import load_onnx_checked
    from .ort_tactics import DEFAULT_MARGIN, compare_whole_models, tune_conv_kernels

    if tune_batch < 1:
        raise ConfigError(f"the tuning batch must be >= 1, got {tune_batch}")
    original = load_onnx_checked(onnx_path, image_input=False)
    tuned, tactics = tune_conv_kernels(original, tune_batch, threads=threads)
    whole = (
        compare_whole_models(original, tuned, tune_batch, threads=threads)
        if any(t.gemm_chosen for t in tactics)
        else None
    )
    kept = whole is not None and whole["ratio"] < 1.0
    record = {
        "batch": tune_batch,
        "margin": DEFAULT_MARGIN,
        "timed": len(tactics),
        "gemm_chosen": sum(t.gemm_chosen for t in tactics),
        "convs": [t.as_dict() for t in tactics],
        "whole_model": whole,
        "kept": kept,
    }
    return (tuned if kept else original), record


def _count_nodes(path: Path) -> int:
    import onnx

    return len(onnx.load(os.fspath(path), load_external_data=False).graph.node)
