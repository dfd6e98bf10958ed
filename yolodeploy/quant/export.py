"""Explicit Q/DQ ONNX export of a quantized model, and its parity check (issue 6 items 6 and 7).

``export_qdq_onnx`` runs, in order (each step a named function):

1. ``check_quantized``: the model has quantized layers and none is calibrating;
2. :func:`~yolodeploy.quant.model.for_flavour` (``trt``: every activation quantizer signed, no conv-output
   quantizers; ``ort``: as calibrated), ``warmup_forward`` on a seeded sample (``deploy.export``), then
   ``torch_to_onnx`` with the TorchScript exporter (``dynamo=False``): each enabled ``TensorQuantizer`` becomes
   QuantizeLinear/DequantizeLinear (per-channel int8 on the weights, axis 0; per tensor on conv inputs, and for
   ``ort`` on the outputs of convs not followed by a ReLU and on the sigmoid gate of their SiLU, ``QuantSiLU``;
   int8 zero point 0, or uint8 zero point 0 for unsigned quantizers); the opset is checked;
3. the graph passes of :mod:`yolodeploy.deploy.qdq_passes` (all exact except ``tie_scales`` where it changes a
   scale, which it does not on a graph with Q/DQ only at conv inputs):

   * ``trt``: ``tie_scales`` -> ``eliminate_redundant_qdq`` -> ``fold_weight_quantizers`` ->
     ``merge_duplicate_quantizers(dequantizers=False)`` (one Q per tensor; a DQ per consumer, as TensorRT likes);
   * ``ort``: no ``tie_scales`` (ORT's QLinearConcat re-quantizes unequal scales itself, and with conv outputs
     quantized, tying is lossy: a YOLOv9 head concatenates the class and box prediction convs, and tying would
     give the class logits the box scale) -> ``eliminate_redundant_qdq(keep_conv_outputs=True)`` (keeps the
     conv-output Qs that make DQ -> Conv -> Q) -> ``fold_weight_quantizers`` (int8 weight initializers) ->
     ``quantize_pass_through_inputs`` (Q/DQ moved in front of Concat / MaxPool / nearest Resize, so each Relu or
     Conv feeds one Q) -> ``merge_duplicate_quantizers`` -> ``to_uint8_activations``, so that every signed
     pair, including the ones the earlier passes added, becomes uint8 zero point 128 -> ``pad_conv_input_channels``
     (:mod:`yolodeploy.deploy.qdq_channels`: the 3-channel first conv gets a zero fourth channel, so ORT runs
     it with its fast symmetric int8 kernel instead of im2col) -> ``convs_to_matmul`` last
     (:mod:`yolodeploy.deploy.qdq_matmul`: the 1x1 int8 convs whose outputs stay float become channels-last MatMuls
     that ORT runs as ``MatMulIntegerToFloat``; equal up to the order of float sums);

4. the opset is checked again, ``onnx.checker`` (full check), and for the ``trt`` flavour
   ``check_trt_qdq_rules`` (the violations are returned in the report; ``strict=True`` refuses to write); for
   ``ort`` the report counts the kernels ORT runs (:func:`ort_fusion_summary`, when onnxruntime is installed);
5. an atomic write.

**Parity** (:func:`check_qdq_parity`): the PyTorch fake-quant model of the file's flavour (``for_flavour``) and
the file in ONNX Runtime run the same inputs; the raw ``(B, N, 4 + C)`` output is split into ``boxes``
(pixels) and ``scores``. Per output we report max and mean |difference| and the fraction of elements that
differ by more than **one int8 step of that output**, ``step = max|reference| / 127`` (the resolution of the
output had it been quantized per tensor like every activation). Exact equality is not expected: ORT and
PyTorch accumulate convolutions in another order (and PyTorch's fake quant multiplies by ``1/scale`` where
QuantizeLinear divides), so a value within ~1e-7 of a rounding boundary can round to the neighbouring integer
at a later Q node, and that one-step flip propagates. With ORT's graph optimizations on, its fused int8
kernels round intermediate results differently again. Such flips are rare and each moves an output by about
a step or less, so ``ok`` means: for every output, at most ``max_fraction`` (default 2 %) of the elements are
more than one step off, and the mean difference is at most a quarter step (a wrong scale, axis or missing
quantizer moves the mean by steps). Measured on the demo model (yolov6n, 224, 8 held-out images, optimizations
off): 1.0-1.2 % of the score elements beyond one step with float SiLUs, 0.6 % with ``QuantSiLU`` (a flipped code
in a quantized SiLU input moves a confident score by more than max|score| / 127), mean 0.15-0.19 step; boxes
0.003-0.06 %.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from ..deploy.export import INPUT_NAME, Exporter, name_io_dims, torch_to_onnx, warmup_forward
from ..deploy.nms import RAW_OUTPUT_NAME
from ..deploy.onnx_utils import check_opset
from ..deploy.qdq_channels import pad_conv_input_channels
from ..deploy.qdq_check import Violation, check_trt_qdq_rules
from ..deploy.qdq_matmul import convs_to_matmul
from ..deploy.qdq_passes import (
    ORT_INT8_OPS,
    TieScalesReport,
    eliminate_redundant_qdq,
    fold_weight_quantizers,
    merge_duplicate_quantizers,
    quantize_pass_through_inputs,
    tie_scales_report,
    to_uint8_activations,
)
from ..deploy.runners.base import Runner
from ..deploy.runners.onnxrt import is_available as ort_is_available
from ..errors import ConfigError, ExportError
from ..utils.choices import Choice
from ..utils.io import atomic_path
from .model import for_flavour, quant_layers
from .quantizer import QuantState

__all__ = [
    "QdqFlavour",
    "QdqExportReport",
    "OutputParity",
    "ParityReport",
    "build_qdq_graph",
    "export_qdq_onnx",
    "check_qdq_parity",
    "count_qdq_nodes",
    "detect_flavour",
    "ort_fusion_summary",
]

DEFAULT_MAX_FRACTION = 0.02
#: The mean |difference| allowed, in steps: rounding flips leave the mean far below a step, a wrong scale or a
#: missing quantizer does not.
MAX_MEAN_STEPS = 0.25
#: The ops :func:`ort_fusion_summary` counts: int8 convs, float convs (plain / with a fused activation), and the
#: DequantizeLinear nodes left between int8 and float kernels.
FUSION_OPS = (
    "QLinearConv", "MatMulIntegerToFloat", "Conv", "FusedConv", "QLinearSigmoid", "QLinearMul", "DequantizeLinear"
)  # fmt: skip


class QdqFlavour(Choice):
    """Which runtime the Q/DQ graph is laid out for.

    ``trt``: symmetric int8 everywhere (zero point 0), Q/DQ at conv inputs only; TensorRT's rules are checked.
    ``ort``: uint8 activations (zero point 0 for tensors calibration saw as non-negative, 128 for signed ones),
    quantized conv outputs and Q/DQ in front of Concat / MaxPool / Resize, so that every quantized conv is
    fusable into ONNX Runtime's QLinearConv (DQ -> Conv -> [Relu] -> Q); x86 CPU kernels want uint8.
    """

    TRT = "trt"
    ORT = "ort"


@dataclasses.dataclass
class QdqExportReport:
    """What :func:`build_qdq_graph` produced: node counts before/after the passes and the checker's verdict."""

    flavour: QdqFlavour
    opset: int
    img_size: tuple[int, int]
    dynamic_batch: bool
    qdq_nodes_exported: int
    qdq_nodes_final: int
    tied_groups: int
    tied_changed: int
    violations: list[Violation]
    path: Path | None = None
    tied_skipped: int = 0
    ort_ops: dict[str, int] | None = None

    def lines(self) -> list[str]:
        head = (
            f"q/dq onnx      {self.path} ({self.flavour.value} flavour, opset {self.opset}, "
            f"Q/DQ nodes {self.qdq_nodes_exported} -> {self.qdq_nodes_final}, "
            f"{self.tied_groups} tied groups ({self.tied_changed} scales changed))"
        )
        checked = self.flavour is QdqFlavour.TRT
        verdict = f"{len(self.violations)} TensorRT Q/DQ rule violations" if checked else "not checked (ort flavour)"
        lines = [head, f"trt rules      {verdict}"] + [f"  {v}" for v in self.violations]
        if self.ort_ops is not None:
            lines.append("ort kernels    " + ", ".join(f"{op} {count}" for op, count in self.ort_ops.items()))
        return lines


def count_qdq_nodes(model: onnx.ModelProto) -> int:
    """Number of QuantizeLinear + DequantizeLinear nodes."""
    return sum(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node)


def check_quantized(qmodel: nn.Module) -> None:
    """Raise ConfigError unless ``qmodel`` has quantized layers and none is still calibrating."""
    layers = quant_layers(qmodel)
    if not layers:
        raise ConfigError("export_qdq_onnx needs a model from quantize_model (it has no quantized layer)")
    for name, layer in layers.items():
        states = (layer.input_quantizer.state, layer.weight_quantizer.state, layer.output_quantizer.state)
        if QuantState.CALIBRATING in states:
            raise ConfigError(f"layer {name} is still calibrating: finish calibration before export")


def _size_pair(img_size: int | tuple[int, int]) -> tuple[int, int]:
    return (int(img_size), int(img_size)) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))


def _trace(qmodel: nn.Module, img_size: tuple[int, int], opset: int, dynamic_batch: bool) -> onnx.ModelProto:
    model = copy.deepcopy(qmodel).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    sample = torch.rand(2 if dynamic_batch else 1, 3, *img_size, generator=torch.Generator().manual_seed(0))
    reference = warmup_forward(model, sample)
    proto = torch_to_onnx(model, sample, opset=opset, dynamic_batch=dynamic_batch, exporter=Exporter.TORCHSCRIPT)
    name_io_dims(proto, tuple(sample.shape), tuple(reference.shape), dynamic_batch)
    return proto


def build_qdq_graph(
    qmodel: nn.Module,
    *,
    img_size: int | tuple[int, int],
    dynamic_batch: bool = True,
    opset: int = 13,
    flavour: QdqFlavour | str = QdqFlavour.TRT,
) -> tuple[onnx.ModelProto, QdqExportReport]:
    """Steps 1-4 of :func:`export_qdq_onnx` in memory: the final graph and its report."""
    flavour = QdqFlavour.parse(flavour)
    if not isinstance(opset, int) or opset < 13:
        raise ConfigError(f"opset {opset!r}: per-channel Q/DQ needs opset 13 or newer")
    check_quantized(qmodel)
    size = _size_pair(img_size)
    proto = _trace(for_flavour(qmodel, flavour.value), size, opset, dynamic_batch)
    exported = count_qdq_nodes(proto)
    if flavour is QdqFlavour.TRT:
        proto, tie_report = tie_scales_report(proto)
        proto = _trt_passes(proto)
    else:
        proto, tie_report = _ort_passes(proto), TieScalesReport(())
    check_opset(proto, opset)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # ValidationError / InferenceError
        raise ExportError(f"the Q/DQ graph fails onnx.checker: {str(exc).splitlines()[0][:300]}") from exc
    violations = check_trt_qdq_rules(proto) if flavour is QdqFlavour.TRT else []
    report = QdqExportReport(
        flavour, opset, size, dynamic_batch, exported, count_qdq_nodes(proto),
        tie_report.num_groups, tie_report.num_changed, violations, tied_skipped=len(tie_report.skipped),
        ort_ops=ort_fusion_summary(proto) if flavour is QdqFlavour.ORT and ort_is_available() else None,
    )  # fmt: skip
    return proto, report


def _trt_passes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The ``trt`` passes after ``tie_scales`` (module docstring, step 3)."""
    proto = fold_weight_quantizers(eliminate_redundant_qdq(proto))
    return merge_duplicate_quantizers(proto, dequantizers=False)


def _ort_passes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The ``ort`` passes (module docstring, step 3), all exact but the last (float summation order)."""
    proto = fold_weight_quantizers(eliminate_redundant_qdq(proto, keep_conv_outputs=True, int8_ops=ORT_INT8_OPS))
    proto = merge_duplicate_quantizers(quantize_pass_through_inputs(proto))
    return convs_to_matmul(pad_conv_input_channels(to_uint8_activations(proto)))


def ort_fusion_summary(model: str | os.PathLike | onnx.ModelProto, threads: int = 1) -> dict[str, int]:
    """Op counts (:data:`FUSION_OPS`) of the graph ONNX Runtime actually runs (CPU EP, all optimizations).

    ``QLinearConv`` convs run in int8, ``MatMulIntegerToFloat`` 1x1 convs in int8 with a float output
    (``convs_to_matmul``); ``Conv`` / ``FusedConv`` ones in float (a quantized conv ORT could not
    fuse shows up here, with the ``DequantizeLinear`` nodes feeding it); ``QLinearSigmoid`` + ``QLinearMul`` are
    the SiLUs run in int8 (``QuantSiLU``).

    Example:
        >>> summary = ort_fusion_summary("yolov6n_int8_ort.onnx")
        >>> print(f"{summary['QLinearConv']} convs in int8, {summary['Conv'] + summary['FusedConv']} in float")
    """
    from ..deploy.runners.onnxrt import OnnxRuntimeRunner

    source = model if isinstance(model, onnx.ModelProto) else os.fspath(model)
    with tempfile.TemporaryDirectory() as folder:
        optimized = Path(folder) / "optimized.onnx"
        with OnnxRuntimeRunner(source, threads=threads, optimized_model_path=optimized):
            pass
        counts = Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)
    return {op: counts.get(op, 0) for op in FUSION_OPS}


def export_qdq_onnx(
    qmodel: nn.Module,
    path: str | os.PathLike,
    *,
    img_size: int | tuple[int, int],
    dynamic_batch: bool = True,
    opset: int = 13,
    flavour: QdqFlavour | str = QdqFlavour.TRT,
    strict: bool = False,
) -> Path:
    """Export a calibrated quantized model as explicit Q/DQ ONNX, graph passes applied, written atomically.

    Args:
        qmodel: a model from :func:`~yolodeploy.quant.model.quantize_model` (enabled layers export Q/DQ,
            disabled ones float convs).
        path: the ``.onnx`` file to write.
        img_size: input (H, W) or one int.
        dynamic_batch: a dynamic batch dimension named ``batch``.
        opset: the opset the file must have (13 or newer).
        flavour: ``"trt"`` (int8, TensorRT rules checked) or ``"ort"`` (uint8 activations, quantized conv
            outputs: every quantized conv fusable into QLinearConv for ORT on x86); see :class:`QdqFlavour`.
        strict: refuse to write a ``trt`` graph that violates a TensorRT Q/DQ rule.

    Returns:
        The path written. Use :func:`build_qdq_graph` for the report (node counts, tied groups, violations).

    Raises:
        ConfigError: bad options or an unquantized/calibrating model. ExportError: export failed, wrong opset,
        invalid graph, or (``strict``) TensorRT rule violations.

    Example:
        >>> export_qdq_onnx(qmodel, "yolov6n_int8.onnx", img_size=640, flavour="ort")
    """
    proto, report = build_qdq_graph(
        qmodel, img_size=img_size, dynamic_batch=dynamic_batch, opset=opset, flavour=flavour
    )
    if strict and report.violations:
        raise ExportError(f"{len(report.violations)} TensorRT Q/DQ rule violations, e.g. {report.violations[0]}")
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return Path(path)


# -- parity ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OutputParity:
    """ORT vs fake-quant PyTorch on one output; true when at most ``max_fraction`` is over one step off and the
    mean difference is at most ``MAX_MEAN_STEPS`` steps."""

    name: str
    max_abs: float
    mean_abs: float
    step: float
    over_step: float
    max_fraction: float

    def __bool__(self) -> bool:
        return self.over_step <= self.max_fraction and self.mean_abs <= MAX_MEAN_STEPS * self.step

    def __str__(self) -> str:
        verdict = "ok" if self else "FAILED"
        return (
            f"{self.name}: max|d| {self.max_abs:.3g}, mean|d| {self.mean_abs:.3g}, "
            f"{100 * self.over_step:.3f}% > 1 step ({self.step:.3g}) [{verdict}]"
        )


@dataclasses.dataclass(frozen=True)
class ParityReport:
    """Per-output parity of a Q/DQ ONNX file against the fake-quant model, over ``images`` inputs."""

    outputs: tuple[OutputParity, ...]
    images: int
    optimization_level: str

    @property
    def ok(self) -> bool:
        return bool(self.outputs) and all(self.outputs)

    def __bool__(self) -> bool:
        return self.ok

    def summary(self) -> str:
        """One line, e.g. ``parity ok on 4 images (ORT opt disable): boxes: ...; scores: ...``."""
        verdict = "ok" if self.ok else "FAILED"
        parts = "; ".join(str(output) for output in self.outputs)
        return f"parity {verdict} on {self.images} images (ORT opt {self.optimization_level}): {parts}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "images": self.images,
            "optimization_level": self.optimization_level,
            "outputs": [dataclasses.asdict(output) for output in self.outputs],
        }


def _output_parity(name: str, ref: np.ndarray, test: np.ndarray, max_fraction: float) -> OutputParity:
    diff = np.abs(ref.astype(np.float64) - test.astype(np.float64))
    step = max(float(np.abs(ref).max()), 1e-12) / 127
    return OutputParity(name, float(diff.max()), float(diff.mean()), step, float((diff > step).mean()), max_fraction)


def detect_flavour(model: str | os.PathLike | onnx.ModelProto) -> QdqFlavour:
    """``ort`` when an activation Q/DQ has a uint8 zero point (all of them do in that flavour), else ``trt``."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model), load_external_data=False)
    types = {init.name: init.data_type for init in proto.graph.initializer}
    types.update({n.output[0]: n.attribute[0].t.data_type for n in proto.graph.node if n.op_type == "Constant"})
    zero_points = [n.input[2] for n in proto.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    uint8 = any(types.get(name) == onnx.TensorProto.UINT8 for name in zero_points)
    return QdqFlavour.ORT if uint8 else QdqFlavour.TRT


def check_qdq_parity(
    qmodel: nn.Module,
    onnx_path: str | os.PathLike | onnx.ModelProto,
    batches: Iterable[Tensor],
    *,
    flavour: QdqFlavour | str | None = None,
    max_fraction: float = DEFAULT_MAX_FRACTION,
    optimization_level: str = "disable",
    threads: int | None = 1,
    runner: Runner | None = None,
) -> ParityReport:
    """Run the fake-quant model and the Q/DQ ONNX (ONNX Runtime CPU) on ``batches``; compare per output.

    Args:
        qmodel: the quantized model the file was exported from (run in the file's flavour, see
            :func:`~yolodeploy.quant.model.for_flavour`: eval, no grad).
        onnx_path: the exported file (or its ``ModelProto``).
        batches: float32 ``(B, 3, H, W)`` inputs, e.g. :func:`~yolodeploy.quant.calibrate.calibration_batches`.
        flavour: the file's :class:`QdqFlavour`; None = :func:`detect_flavour`.
        max_fraction: the largest fraction of elements allowed to differ by more than one step (module docstring).
        optimization_level: ORT graph optimizations (``disable`` compares the graph as written; ``all`` lets ORT
            fuse int8 kernels, which round differently).
        threads: ORT intra-op threads.
        runner: run the file on this (inactive) runner instead, e.g. an ``OpenVINORunner`` over it
            (``optimization_level`` and ``threads`` then do not apply).

    Returns:
        A :class:`ParityReport` (``report.ok``, ``report.summary()``).

    Example:
        >>> report = check_qdq_parity(qmodel, "yolov6n_int8.onnx", calibration_batches(paths[:8], 640))
        >>> print(report.summary())
    """
    from ..deploy.runners.onnxrt import OnnxRuntimeRunner

    flavour = detect_flavour(onnx_path) if flavour is None else QdqFlavour.parse(flavour)
    reference = for_flavour(qmodel, flavour.value).eval()
    refs, tests = [], []
    if runner is None:
        runner = OnnxRuntimeRunner(onnx_path, threads=threads, optimization_level=optimization_level)
    with runner:
        for batch in batches:
            with torch.no_grad():
                refs.append(reference(batch).numpy())
            tests.append(np.asarray(runner.infer({INPUT_NAME: batch.numpy()})[RAW_OUTPUT_NAME]))
    if not refs:
        raise ConfigError("check_qdq_parity needs at least one input batch")
    ref, test = np.concatenate(refs), np.concatenate(tests)
    outputs = (
        _output_parity("boxes", ref[..., :4], test[..., :4], max_fraction),
        _output_parity("scores", ref[..., 4:], test[..., 4:], max_fraction),
    )
    return ParityReport(outputs, int(ref.shape[0]), optimization_level)
