"""``build-engine --backend openvino``: convert an ONNX file (FP32 or Q/DQ INT8) to OpenVINO IR (``.xml`` + ``.bin``).

OpenVINO reads ONNX directly, so the IR is about load time and a file OpenVINO tools take, not speed. The
conversion keeps FP32 weights (``compress_to_fp16=False``: OpenVINO's default would halve the float weights,
which changes the numbers of an FP32 baseline). Q/DQ pairs become ``FakeQuantize`` ops that the CPU plugin runs
as int8 kernels; the report counts, from the compiled CPU model, how many convolutions really run in int8 --
including convs whose output stays float, which ONNX Runtime keeps in float (it needs a Q after the conv).

Convert the ``ort`` flavour (uint8 activations) for OpenVINO: on the demo model's PTQ files OpenVINO gave the same AP
as ONNX Runtime on ``*_ort.onnx`` (0.8368 vs 0.8362) but lost about a point on the int8-activation ``*_trt.onnx``
(0.8248 vs 0.8341 on ONNX Runtime); the report says so when it sees int8 activations.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EngineError, OnnxModelError, first_line
from ..utils.io import atomic_path
from .runners.openvino_runner import import_openvino
from .tensorrt_build import file_sha256, sidecar_path

__all__ = ["OpenVINOBuildReport", "convert_to_ir", "default_ir_path", "conv_precisions"]

SIDECAR_FORMAT = "yolodeploy-openvino-ir"
#: Layer types counted as convs; ``FullyConnected`` is how OpenVINO runs the 1x1 convs ``convs_to_matmul`` wrote.
CONV_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected")


@dataclasses.dataclass
class OpenVINOBuildReport:
    """What ``convert_to_ir`` wrote."""

    xml_path: Path
    bin_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]

    def lines(self) -> list[str]:
        s = self.sidecar
        kernels = ", ".join(f"{kind} {count}" for kind, count in s["conv_precisions"].items()) or "none"
        note = []
        if s.get("activation_dtype") == "int8":
            note = ["  note: int8 (TensorRT-style) activations: OpenVINO is less accurate on them than ONNX Runtime; "
                    "convert the uint8 *_ort.onnx flavour for OpenVINO"]  # fmt: skip
        return [
            f"{self.xml_path}: OpenVINO {s['openvino_version']} IR ({s['ops']} ops, {s['fake_quantize']} "
            f"FakeQuantize, {s['build']['seconds']:.1f} s); weights in {self.bin_path.name}",
            f"  conv kernels (OpenVINO CPU, f32 hint): {kernels}",
            f"  sidecar: {self.sidecar_path}",
            *note,
        ]


def default_ir_path(onnx_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.xml`` (its weights go to ``model.bin``)."""
    return Path(onnx_path).with_suffix(".xml")


def conv_precisions(model: Any, device: str = "CPU") -> dict[str, int]:
    """Count the compiled model's convolution layers by kernel precision, e.g. ``{"Convolution u8": 69}``.

    ``model`` is an ``openvino.Model`` (a dynamic batch is fixed to 1 for this compile).
    """
    ov = import_openvino()
    model = model.clone()
    shapes = {}
    for port in model.inputs:
        shape = port.get_partial_shape()
        if shape.rank.is_static and len(shape) > 0 and shape[0].is_dynamic:
            shape[0] = 1
        shapes[port.get_any_name()] = shape
    model.reshape(shapes)
    compiled = ov.Core().compile_model(model, device, {"INFERENCE_PRECISION_HINT": "f32"})
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        if layer in CONV_LAYERS:
            counts[f"{layer} {info['runtimePrecision'].astype(str)}"] += 1
    return dict(sorted(counts.items()))


def convert_to_ir(
    onnx_path: str | os.PathLike, output_path: str | os.PathLike | None = None, *, int8: bool = False
) -> OpenVINOBuildReport:
    """Write ``onnx_path`` as OpenVINO IR to ``output_path`` (default ``<stem>.xml``), its ``.bin`` and a sidecar.

    Args:
        int8: require Q/DQ nodes in the ONNX (the IR then runs int8 convs on CPU).

    Raises:
        ConfigError: an output that does not end in ``.xml``; ``int8`` on a graph without Q/DQ nodes.
        OnnxModelError: OpenVINO cannot read the ONNX file.
        BackendUnavailableError: OpenVINO is not installed.

    Example:
        >>> convert_to_ir("yolov6n_int8_ort.onnx", "yolov6n_int8.xml", int8=True).lines()
    """
    ov = import_openvino()
    onnx_path = Path(onnx_path)
    xml_path = Path(output_path) if output_path is not None else default_ir_path(onnx_path)
    if xml_path.suffix.lower() != ".xml":
        raise ConfigError(f"{xml_path}: OpenVINO IR is an .xml file (with a .bin beside it); name the output *.xml")
    if not onnx_path.is_file():
        raise OnnxModelError(f"{onnx_path}: no such ONNX file")
    start = time.perf_counter()
    try:
        model = ov.convert_model(os.fspath(onnx_path))
    except Exception as exc:
        raise OnnxModelError(f"{onnx_path}: OpenVINO cannot convert it ({first_line(exc)})") from None
    op_types = Counter(op.get_type_name() for op in model.get_ordered_ops())
    if int8 and not op_types.get("FakeQuantize"):
        raise ConfigError(f"--int8: {onnx_path} has no Q/DQ nodes; run `yolodeploy quantize` first")
    sidecar = {
        "format": SIDECAR_FORMAT,
        "format_version": 1,
        "onnx": {"path": os.fspath(onnx_path), "sha256": file_sha256(onnx_path)},
        "openvino_version": ov.get_version(),
        "ops": sum(op_types.values()),
        "fake_quantize": op_types.get("FakeQuantize", 0),
        "activation_dtype": _activation_dtype(onnx_path) if op_types.get("FakeQuantize") else None,
        "conv_precisions": conv_precisions(model),
    }
    bin_path = xml_path.with_suffix(".bin")
    _save_ir(ov, model, xml_path, bin_path)
    sidecar["build"] = {
        "seconds": round(time.perf_counter() - start, 3),
        "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_path(sidecar_path(xml_path)) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    return OpenVINOBuildReport(xml_path, bin_path, sidecar_path(xml_path), sidecar)


def _activation_dtype(onnx_path: Path) -> str:
    """``uint8`` or ``int8``: the activation quantization of a Q/DQ ONNX file (our ``ort`` / ``trt`` flavours)."""
    from ..quant.export import QdqFlavour, detect_flavour

    return "uint8" if detect_flavour(onnx_path) is QdqFlavour.ORT else "int8"


def _save_ir(ov: Any, model: Any, xml_path: Path, bin_path: Path) -> None:
    """Save into a temporary folder beside the output (OpenVINO insists on an .xml name), then rename the .bin
    and the .xml into place, so a failed save leaves no half-written IR."""
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{xml_path.stem}.", dir=xml_path.parent))
    try:
        ov.save_model(model, os.fspath(folder / xml_path.name), compress_to_fp16=False)
        written = folder / xml_path.name
        if not written.is_file() or not written.with_suffix(".bin").is_file():
            raise EngineError(f"OpenVINO did not write the IR of {xml_path.name}")
        os.replace(written.with_suffix(".bin"), bin_path)
        os.replace(written, xml_path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
