"""ONNX export as a visible pipeline of named steps (after timm's ``onnx_export``).

``export_onnx`` runs, in order:

1. ``prepare_deploy_model``: ``eval()`` -> ``reparameterize_model`` (the deploy form is always what is exported)
   -> ``half()`` for an fp16 export;
2. ``warmup_forward``: one forward pass on the seeded sample input (its output is the parity reference);
3. ``torch_to_onnx``: ``torch.onnx.export`` with ``dynamo=`` passed explicitly, then ``check_exported_opset``
   (the dynamo exporter silently writes opset 18 when asked for less), ``name_io_dims``, for fp16
   ``cast_fp16_range_`` (ONNX has no fp16 ``Range``; the heads build anchor grids with ``torch.arange``) and
   ``onnx.checker`` (steps 1-3 together: ``export_raw_graph``);
4. ``check_raw_parity``: the raw graph in ONNX Runtime (CPU EP) against PyTorch on the same seeded input
   (batch 2 for a dynamic-batch export, else 1);
5. ``append_nms`` (optional) -> ``onnx.checker`` -> ``check_nms_parity`` (ORT NMS tail against
   :func:`yolodeploy.core.nms.batched_nms` on ORT's own raw output; the TensorRT tail is checked structurally);
6. an atomic write of the file.

**Exporter.** The default is the TorchScript exporter (``dynamo=False``): on torch 2.13 it exports every family
(YOLOv6 / v6-lite / v7 / v9 / GELAN) with a dynamic batch at the requested opset (tested: 17 for each family,
13 and 18 for YOLOv6-N) in about a second. An fp16 export is always traced with a dynamic batch (a static fp16
trace fails inside the TorchScript exporter) and a static batch is then pinned in the I/O shapes.
The dynamo exporter (``exporter="dynamo"``) works at opset 18 for all of them, but takes 5-10 s, and its
down-conversion to opset 17 writes invalid graphs for YOLOv6 and YOLOv9 (``Split`` with the opset-18
``num_outputs`` attribute) and leaves YOLOv6-lite at opset 18; both cases are caught here and reported.

**Tolerances.** Raw fp32 output: max |ORT - torch| <= 1e-4 x the largest reference magnitude (boxes are in
pixels). ``half=True``: the fp16 graph runs in ONNX Runtime's CPU EP (which inserts float32 casts around the
fp16 kernels it lacks) and is compared with the float32 PyTorch deploy model at 5e-3 x the largest magnitude:
fp16 alone rounds a 640-pixel coordinate by up to 0.25 px (4e-4), and the rest is accumulated rounding.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import enum
import io
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from ..core.compare import CompareResult, compare_outputs
from ..core.nms import batched_nms
from ..core.reparam import reparameterize_model
from ..errors import CheckpointError, ConfigError, ExportError, OnnxModelError
from ..utils.io import atomic_path
from ..utils.optional import import_optional
from .image_input import check_uint8_input, uint8_image_input
from .nms import NMS_OUTPUT_NAMES, RAW_OUTPUT_NAME, NMSConfig, NMSKind, append_nms
from .onnx_utils import TensorMeta, check_opset, onnx_io

__all__ = [
    "Exporter",
    "ExportReport",
    "export_onnx",
    "prepare_deploy_model",
    "warmup_forward",
    "torch_to_onnx",
    "export_raw_graph",
    "check_raw_parity",
    "check_nms_parity",
    "load_model_source",
    "INPUT_NAME",
    "RAW_TOLERANCE",
    "HALF_TOLERANCE",
]

INPUT_NAME = "images"
BATCH_DIM = "batch"
MIN_OPSET = 13  # the NMS tail uses the opset-13 forms of Unsqueeze / Squeeze / ReduceSum
RAW_TOLERANCE = 1e-4  # relative to the largest reference magnitude
HALF_TOLERANCE = 5e-3


class Exporter(str, enum.Enum):
    """Which ``torch.onnx.export`` path to use (``dynamo=False`` / ``dynamo=True``)."""

    TORCHSCRIPT = "torchscript"
    DYNAMO = "dynamo"


@dataclasses.dataclass
class ExportReport:
    """What ``export_onnx`` wrote and the parity results that prove it."""

    path: Path
    opset: int
    parity: list[CompareResult]
    exporter: Exporter
    img_size: tuple[int, int]
    dynamic_batch: bool
    half: bool
    nms: NMSConfig | None
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(self.parity)

    def lines(self) -> list[str]:
        def io_text(metas: list[TensorMeta]) -> str:
            return ", ".join(f"{m.name} {m.dtype} {'x'.join(str(d) for d in m.shape)}" for m in metas)

        nms = self.nms.kind.value if self.nms else "none"
        lines = [
            f"onnx           {self.path} (opset {self.opset}, {self.exporter.value} exporter, "
            f"{'fp16' if self.half else 'fp32'}, nms {nms}, {self.seconds:.1f} s)",
            f"inputs         {io_text(self.inputs)}",
            f"outputs        {io_text(self.outputs)}",
        ]
        lines += [f"parity         {result}" for result in self.parity] or ["parity         not checked"]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "opset": self.opset,
            "exporter": self.exporter.value,
            "img_size": list(self.img_size),
            "dynamic_batch": self.dynamic_batch,
            "half": self.half,
            "nms": self.nms.to_dict() if self.nms else None,
            "parity": [r.to_dict() for r in self.parity],
            "seconds": self.seconds,
        }


def load_model_source(source: str | os.PathLike, *, seed: int = 0) -> nn.Module:
    """A model to export from a checkpoint path (ours or an official ``.pt``) or a registry model name.

    A registry name gives a random-init model whose BatchNorm statistics and constant parameters are re-drawn
    (``randomize_for_verification_``), so that parity checks see signal in every branch; use it for
    benchmarks and tests, not for detection.
    """
    from ..core.init import randomize_for_verification_
    from ..models import create_model, is_model, load_checkpoint

    path = Path(source)
    if path.exists() or not is_model(str(source)):
        if not path.exists():
            raise CheckpointError(f"{source}: no such file, nor a model name (see `yolodeploy models`)")
        return load_checkpoint(path)
    torch.manual_seed(seed)
    return randomize_for_verification_(create_model(str(source)), seed).eval()


# -- step 1-2: deploy model and reference forward ------------------------------------------------------------


def prepare_deploy_model(model: nn.Module, *, half: bool = False) -> nn.Module:
    """A deploy-form copy of ``model`` in eval mode (fp16 weights if ``half``); ``model`` is not modified."""
    deploy = reparameterize_model(copy.deepcopy(model).eval(), inplace=True).eval()
    for param in deploy.parameters():
        param.requires_grad_(False)
    return deploy.half() if half else deploy


def _sample_input(batch: int, img_size: tuple[int, int], seed: int = 0) -> Tensor:
    return torch.rand(batch, 3, *img_size, generator=torch.Generator().manual_seed(seed))


def warmup_forward(model: nn.Module, sample: Tensor) -> Tensor:
    """One forward pass (lazy buffers such as anchor grids get built) returning the raw (B, N, 4 + C) output."""
    with torch.no_grad():
        output = model(sample)
    if not isinstance(output, Tensor) or output.ndim != 3 or output.shape[-1] < 5:
        kind = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ExportError(f"the model returns {kind}, not the (B, N, 4 + C) eval output a detector export needs")
    return output


# -- step 3: torch.onnx.export ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporters' deprecation warnings, progress prints and log lines (e.g. "torchvision is not
    installed"); failures still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export_call(model: nn.Module, sample: Tensor, opset: int, dynamic_batch: bool, exporter: Exporter) -> bytes:
    common = dict(opset_version=opset, input_names=[INPUT_NAME], output_names=[RAW_OUTPUT_NAME])
    if exporter is Exporter.DYNAMO:
        shapes = ({0: torch.export.Dim(BATCH_DIM, min=1, max=4096)},) if dynamic_batch else None
        program = torch.onnx.export(model, (sample,), dynamo=True, dynamic_shapes=shapes, optimize=True, **common)
        return program.model_proto.SerializeToString()
    buffer = io.BytesIO()
    axes = {INPUT_NAME: {0: BATCH_DIM}, RAW_OUTPUT_NAME: {0: BATCH_DIM}} if dynamic_batch else None
    torch.onnx.export(model, (sample,), buffer, dynamo=False, dynamic_axes=axes, do_constant_folding=True, **common)
    return buffer.getvalue()


def torch_to_onnx(
    model: nn.Module, sample: Tensor, *, opset: int, dynamic_batch: bool, exporter: Exporter
) -> onnx.ModelProto:
    """``torch.onnx.export`` into memory with the exporter's warnings and progress output silenced.

    Raises:
        ExportError: the exporter failed, or wrote another opset than ``opset``.
    """
    try:
        with _quiet_exporter():
            data = _export_call(model, sample, opset, dynamic_batch, exporter)
    except Exception as exc:  # the exporters raise many types; all mean "this graph did not export"
        other = "torchscript" if exporter is Exporter.DYNAMO else "dynamo (with --opset 18)"
        message = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:300]
        raise ExportError(f"torch.onnx.export ({exporter.value}) failed: {message}; try --exporter {other}") from exc
    proto = onnx.load_from_string(data)
    check_exported_opset(proto, opset, exporter)
    return proto


def check_exported_opset(proto: onnx.ModelProto, opset: int, exporter: Exporter) -> None:
    """Fail unless the file has the asked opset (``dynamo=True`` may silently keep 18)."""
    try:
        check_opset(proto, opset)
    except OnnxModelError as exc:
        hint = "use --opset 18 or --exporter torchscript" if exporter is Exporter.DYNAMO else "use another --opset"
        raise ExportError(f"{exc} ({exporter.value} exporter); {hint}") from None


def name_io_dims(
    proto: onnx.ModelProto, input_shape: tuple[int, ...], output_shape: tuple[int, ...], dynamic_batch: bool
) -> None:
    """Set the I/O dims: static ones as traced (the TorchScript exporter leaves the output's symbolic), the
    batch dimension named ``batch`` when dynamic, else pinned to the traced batch size."""
    for value, shape in ((proto.graph.input[0], input_shape), (proto.graph.output[0], output_shape)):
        dims = value.type.tensor_type.shape.dim
        for index, dim in enumerate(dims):
            if index == 0 and dynamic_batch:
                dim.dim_param = BATCH_DIM
            else:
                dim.dim_value = int(shape[index])


def cast_fp16_range_(proto: onnx.ModelProto) -> int:
    """Run ``Range`` in float32 where an fp16 trace made it fp16 (ONNX defines no fp16 ``Range``); returns
    how many nodes were wrapped in Casts. The anchor grids of the heads are built with ``torch.arange``."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    types.update({init.name: init.data_type for init in proto.graph.initializer})
    types.update({n.output[0]: n.attribute[0].t.data_type for n in proto.graph.node if n.op_type == "Constant"})
    nodes, wrapped = [], 0
    for node in proto.graph.node:
        if node.op_type != "Range" or types.get(node.input[0]) != onnx.TensorProto.FLOAT16:
            nodes.append(node)
            continue
        wrapped += 1
        inputs = [f"{name}_fp32_{wrapped}" for name in node.input]
        nodes += [
            onnx.helper.make_node("Cast", [src], [dst], to=onnx.TensorProto.FLOAT)
            for src, dst in zip(node.input, inputs)
        ]
        nodes.append(onnx.helper.make_node("Range", inputs, [f"{node.output[0]}_fp32"], name=node.name))
        nodes.append(
            onnx.helper.make_node("Cast", [f"{node.output[0]}_fp32"], list(node.output), to=onnx.TensorProto.FLOAT16)
        )
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return wrapped


# -- steps 4-5: checks -----------------------------------------------------------------------------------------


def _ort_run(proto: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    onnxruntime = import_optional(
        "onnxruntime",
        "the parity check needs ONNX Runtime ({error}): pip install onnxruntime; "
        "or skip it with check=False / --no-check",
    )
    try:
        session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, feed)
    except Exception as exc:  # ORT's own exception types (InvalidGraph, Fail, ...): the exported graph is wrong
        raise ExportError(f"ONNX Runtime cannot run the exported graph: {str(exc).splitlines()[0][:300]}") from exc


def check_raw_parity(
    proto: onnx.ModelProto, sample: Tensor, reference: Tensor, *, tolerance: float
) -> tuple[CompareResult, np.ndarray]:
    """Run the raw graph in ONNX Runtime on ``sample`` and compare with the PyTorch ``reference`` output.

    Returns the comparison (tolerance relative to the largest reference magnitude) and ORT's raw output.
    """
    (output,) = _ort_run(proto, {INPUT_NAME: sample.numpy()})
    scale = max(float(reference.abs().max()), 1e-12)
    result = compare_outputs(
        reference.float(),
        torch.from_numpy(output).float(),
        name=f"{RAW_OUTPUT_NAME} (onnxruntime vs torch)",
        atol=tolerance * scale,
        rtol=0.0,
    )
    return result, output


def check_nms_parity(proto: onnx.ModelProto, sample: Tensor, raw_output: np.ndarray, config: NMSConfig):
    """Run the NMS graph in ONNX Runtime and compare each of its four outputs with ``batched_nms`` applied to
    ORT's raw output of the same input (counts and classes exactly, boxes and scores to 1e-6 relative)."""
    outputs = _ort_run(proto, {INPUT_NAME: sample.numpy()})
    raw = torch.from_numpy(raw_output).float()
    expected = batched_nms(raw[..., :4], raw[..., 4:], iou=config.iou, conf=config.conf, topk=config.topk)
    float_atol = 1e-6 * max(float(raw.abs().max()), 1.0)
    results = []
    for name, ref, test in zip(NMS_OUTPUT_NAMES, expected, outputs):
        test = torch.from_numpy(test)
        atol = 0.0 if name in ("num_dets", "det_classes") else float_atol
        results.append(
            compare_outputs(ref.to(test.dtype), test, name=f"{name} (onnx NMS vs batched_nms)", atol=atol, rtol=0.0)
        )
    return results


def _run_checker(proto: onnx.ModelProto, exporter: Exporter) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # ValidationError / InferenceError
        hint = "; use --opset 18 or --exporter torchscript" if exporter is Exporter.DYNAMO else ""
        raise ExportError(f"the exported graph fails onnx.checker: {str(exc).splitlines()[0][:300]}{hint}") from exc


def export_raw_graph(
    model: nn.Module, sample: Tensor, *, opset: int, dynamic_batch: bool, half: bool, exporter: Exporter
) -> tuple[onnx.ModelProto, Tensor]:
    """Steps 1-3: the deploy form, its reference output on ``sample`` (float32) and the checked raw graph."""
    deploy = prepare_deploy_model(model)
    reference = warmup_forward(deploy, sample)
    traced, feed = (prepare_deploy_model(deploy, half=True), sample.half()) if half else (deploy, sample)
    if half:
        warmup_forward(traced, feed)
    # fp16 is always traced with a dynamic batch: a static fp16 trace makes the TorchScript exporter
    # constant-evaluate the anchor grids' fp16 Range, which fails ("tensor does not have a device")
    proto = torch_to_onnx(traced, feed, opset=opset, dynamic_batch=dynamic_batch or half, exporter=exporter)
    name_io_dims(proto, tuple(sample.shape), tuple(reference.shape), dynamic_batch)
    if half:
        cast_fp16_range_(proto)
    _run_checker(proto, exporter)
    return proto, reference


# -- the pipeline ----------------------------------------------------------------------------------------------


def _resolve_options(model, img_size, opset, exporter, nms) -> tuple[tuple[int, int], Exporter, NMSConfig | None]:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"export_onnx needs an nn.Module, got {type(model).__name__}")
    size = img_size if img_size is not None else getattr(model, "input_size", None)
    if size is None:
        raise ConfigError("pass img_size: the model does not say its input size")
    size = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    stride = max(getattr(model, "strides", (32,)))
    if len(size) != 2 or min(size) < stride or any(s % stride for s in size):
        raise ConfigError(f"image size {size} must be (H, W) multiples of the model's stride {stride}, e.g. 640")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ConfigError(f"opset {opset!r} is not supported; use {MIN_OPSET} or newer (default 17)")
    try:
        exporter = Exporter(exporter)
    except ValueError:
        raise ConfigError(f"unknown exporter {exporter!r}; expected torchscript or dynamo") from None
    if nms is not None and not isinstance(nms, NMSConfig):
        raise ConfigError(f"nms must be an NMSConfig or None, got {type(nms).__name__}")
    return size, exporter, (nms if nms is not None and nms.kind is not NMSKind.NONE else None)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    img_size: int | tuple[int, int] | None = None,
    opset: int = 17,
    dynamic_batch: bool = False,
    half: bool = False,
    nms: NMSConfig | None = None,
    check: bool = True,
    exporter: Exporter | str = Exporter.TORCHSCRIPT,
    uint8_input: bool = False,
) -> ExportReport:
    """Export the deploy form of a detector to ONNX and prove the file right in ONNX Runtime.

    Args:
        model: a zoo detector in any form (it is re-parameterized on a copy; ``model`` is left as it is).
        path: the ``.onnx`` file to write (atomically: no partial file on failure).
        img_size: input (H, W) or one int; default ``model.input_size``.
        opset: the ONNX opset the file must have (checked after export).
        dynamic_batch: make the batch dimension dynamic (named ``batch``).
        half: fp16 weights and fp16 input/outputs.
        nms: append an NMS tail (``NMSConfig("ort")`` or ``NMSConfig("trt")``); None: raw output.
        check: run the ONNX Runtime parity checks (raw output vs PyTorch; ORT NMS vs ``batched_nms``).
        exporter: ``"torchscript"`` (default) or ``"dynamo"``.
        uint8_input: take the letterboxed uint8 RGB image as ``(B, H, W, 3)`` and convert it in the graph
            (``deploy.image_input``; checked: identical outputs to the float-input graph).

    Returns:
        An ``ExportReport``; ``report.parity`` holds one ``CompareResult`` per checked output.

    Raises:
        ConfigError: invalid options. ExportError: export failed, wrong opset, invalid graph, or parity above
        tolerance (the file is then not written).

    Example:
        >>> report = export_onnx(create_model("yolov6n"), "yolov6n.onnx", dynamic_batch=True)
        >>> print("\\n".join(report.lines()))
    """
    start = time.perf_counter()
    img_size, exporter, nms = _resolve_options(model, img_size, opset, exporter, nms)
    sample = _sample_input(2 if dynamic_batch else 1, img_size)
    proto, reference = export_raw_graph(
        model, sample, opset=opset, dynamic_batch=dynamic_batch, half=half, exporter=exporter
    )
    feed = sample.half() if half else sample
    parity: list[CompareResult] = []
    if check:
        tolerance = HALF_TOLERANCE if half else RAW_TOLERANCE
        raw_result, raw_output = check_raw_parity(proto, feed, reference, tolerance=tolerance)
        parity.append(raw_result)
    if uint8_input:
        float_proto, proto = proto, uint8_image_input(proto)
        if check:
            exact, pixels, raw_output = check_uint8_input(float_proto, proto, img_size, batch=feed.shape[0])
            parity.append(exact)
            feed = torch.from_numpy(pixels)
    if nms is not None:
        proto = append_nms(proto, nms)
        _run_checker(proto, exporter)
        if check and nms.kind is NMSKind.ORT:
            parity += check_nms_parity(proto, feed, raw_output, nms)
    failed = [str(result) for result in parity if not result]
    if failed:
        raise ExportError(f"ONNX Runtime parity above tolerance, file not written: {'; '.join(failed)}")
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    inputs, outputs = onnx_io(proto)
    seconds = time.perf_counter() - start
    return ExportReport(
        Path(path), opset, parity, exporter, img_size, dynamic_batch, half, nms, inputs, outputs, seconds
    )
