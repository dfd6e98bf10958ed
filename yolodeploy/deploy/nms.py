"""NMS tails appended to an exported raw ONNX graph (a graph edit with ``onnx.helper``).

The raw graph ends in ``outputs`` (B, N, 4 + C): xyxy boxes in pixels, then per-class scores. Both tails
replace it by the four fixed outputs every NMS model of yolodeploy has:

=============== ====================== ===========================================================
``num_dets``    int32 (B, 1)           detections kept per image
``det_boxes``   float (B, topk, 4)     xyxy pixels, zero beyond ``num_dets``
``det_scores``  float (B, topk)        descending, zero beyond ``num_dets``
``det_classes`` int32 (B, topk)        zero beyond ``num_dets``
=============== ====================== ===========================================================

(float is the model's float type: float16 for a ``--half`` export.)

* ``NMSKind.ORT``: standard ONNX ops (``NonMaxSuppression`` per batch and class, then a per-image ``TopK``
  over the survivors and zero padding), so ONNX Runtime, TensorRT and OpenVINO all run it. Its results equal
  :func:`yolodeploy.core.nms.batched_nms`.
* ``NMSKind.TRT``: one ``EfficientNMS_TRT`` plugin node (TensorRT's fused NMS; runs only in TensorRT). The
  node lives in the ``TRT`` domain, as in the official YOLOv6/v7 exports, so that ``onnx.checker`` accepts it;
  TensorRT's ONNX parser finds plugins by op type whatever the domain.

Both keep the batch dimension dynamic when the raw graph has it.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ConfigError, ExportError

__all__ = ["NMSKind", "NMSConfig", "NMS_OUTPUT_NAMES", "RAW_OUTPUT_NAME", "append_nms"]

RAW_OUTPUT_NAME = "outputs"
NMS_OUTPUT_NAMES = ("num_dets", "det_boxes", "det_scores", "det_classes")
TRT_DOMAIN = "TRT"
_INT64_MAX = np.iinfo(np.int64).max


class NMSKind(str, enum.Enum):
    """Which NMS the exported graph ends with (``NONE``: the raw output)."""

    NONE = "none"
    ORT = "ort"
    TRT = "trt"


@dataclasses.dataclass(frozen=True)
class NMSConfig:
    """NMS appended at export.

    Args:
        kind: ``NMSKind`` (or its string value: ``"none"``, ``"ort"``, ``"trt"``).
        topk: detections kept per image (and per class).
        iou: IoU threshold; a box overlapping a kept box of its class by more than this is suppressed.
        conf: score threshold; only scores greater than this are candidates.

    Example:
        >>> export_onnx(model, "m.onnx", nms=NMSConfig("ort", topk=300, conf=0.25))
    """

    kind: NMSKind = NMSKind.NONE
    topk: int = 100
    iou: float = 0.65
    conf: float = 0.001
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", NMSKind(self.kind))
        except ValueError:
            choices = ", ".join(k.value for k in NMSKind)
            raise ConfigError(f"unknown NMS kind {self.kind!r}; expected one of {choices}") from None
        if isinstance(self.topk, bool) or not isinstance(self.topk, int) or self.topk < 1:
            raise ConfigError(f"NMS topk must be a positive integer, got {self.topk!r}")
        if not 0.0 <= self.iou <= 1.0:
            raise ConfigError(f"NMS iou threshold must be in [0, 1], got {self.iou}")
        if not 0.0 <= self.conf < 1.0:
            raise ConfigError(f"NMS conf threshold must be in [0, 1), got {self.conf}")

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "kind": self.kind.value, "topk": self.topk, "iou": self.iou, "conf": self.conf}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NMSConfig:
        data = {k: v for k, v in data.items() if k != "version"}
        return cls(**data)


class _Graph:
    """Collects the nodes and constants of a tail, every name under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self.initializers, self._count = prefix, [], [], 0

    def const(self, name: str, value: Any, dtype: Any) -> str:
        tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype), f"{self.prefix}{name}")
        self.initializers.append(tensor)
        return tensor.name

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, domain: str = "", **attrs):
        self._count += 1
        name = f"{self.prefix}{op_type}_{self._count}"
        names = outputs if isinstance(outputs, list) else [f"{name}_out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=name, domain=domain, **attrs))
        return names[0] if len(names) == 1 else names


def _split_raw(graph: _Graph, raw: str) -> tuple[str, str]:
    """(B, N, 4 + C) -> boxes (B, N, 4) and scores (B, N, C), in the raw output's dtype."""
    axis, four = graph.const("axis2", [2], np.int64), graph.const("four", [4], np.int64)
    boxes = graph.op("Slice", [raw, graph.const("zero", [0], np.int64), four, axis])
    scores = graph.op("Slice", [raw, four, graph.const("end", [_INT64_MAX], np.int64), axis])
    return boxes, scores


def _select(graph: _Graph, boxes: str, scores: str, config: NMSConfig) -> tuple[str, str, str, str]:
    """Class-aware NMS per image: the survivors' batch index, class (each (K, 1)), score (K,) and box (K, 4)."""
    scores_t = graph.op("Transpose", [scores], perm=[0, 2, 1])  # (B, C, N)
    limits = [
        graph.const("max_per_class", [config.topk], np.int64),
        graph.const("iou", [config.iou], np.float32),
        graph.const("conf", [config.conf], np.float32),
    ]
    selected = graph.op("NonMaxSuppression", [boxes, scores_t, *limits])  # (K, 3): batch, class, box index
    sel_batch, sel_class, sel_box = [
        graph.op("Gather", [selected, graph.const(f"col{i}", [i], np.int64)], axis=1) for i in range(3)
    ]
    sel_scores = graph.op("GatherND", [scores_t, selected])
    sel_boxes = graph.op("GatherND", [boxes, graph.op("Concat", [sel_batch, sel_box], axis=1)])
    return sel_batch, sel_class, sel_scores, sel_boxes


def _per_image_topk(graph: _Graph, raw: str, sel_batch: str, sel_scores: str, topk: int) -> tuple[str, str, str]:
    """The ``topk`` best survivors of each image: scores (B, topk), their survivor indices and a validity mask.

    A dense (B, K + topk) matrix holds each survivor's score in its own image's row and -1 elsewhere, plus
    ``topk`` columns of -1 so that TopK always has ``topk`` entries to pick; picks of -1 are padding.
    """
    batch = graph.op("Gather", [graph.op("Shape", [raw]), graph.const("b_idx", [0], np.int64)])  # (1,)
    count = graph.op("Squeeze", [batch, graph.const("ax0", [0], np.int64)])
    image_ids = graph.op("Range", [graph.const("r0", 0, np.int64), count, graph.const("r1", 1, np.int64)])
    rows = graph.op("Unsqueeze", [image_ids, graph.const("ax1", [1], np.int64)])  # (B, 1)
    mask = graph.op("Equal", [rows, graph.op("Transpose", [sel_batch], perm=[1, 0])])  # (B, K)
    neg = graph.const("neg", [[-1.0]], np.float32)
    dense = graph.op("Where", [mask, graph.op("Unsqueeze", [sel_scores, graph.const("ax0_", [0], np.int64)]), neg])
    pad = graph.op("Expand", [neg, graph.op("Concat", [batch, graph.const("topk", [topk], np.int64)], axis=0)])
    dense = graph.op("Concat", [dense, pad], axis=1)
    values, index = graph.op("TopK", [dense, graph.const("k", [topk], np.int64)], outputs=2, axis=1)
    valid = graph.op("Greater", [values, graph.const("half_neg", -0.5, np.float32)])  # scores are >= 0
    return values, index, valid


def _ort_tail(graph: _Graph, raw: str, float_type: int, config: NMSConfig) -> None:
    """Standard-ONNX NMS: NonMaxSuppression -> per-image TopK over the survivors -> masked, padded outputs."""
    if float_type != TensorProto.FLOAT:
        raw = graph.op("Cast", [raw], to=TensorProto.FLOAT)  # NonMaxSuppression takes float32 only
    boxes, scores = _split_raw(graph, raw)
    sel_batch, sel_class, sel_scores, sel_boxes = _select(graph, boxes, scores, config)
    values, index, valid = _per_image_topk(graph, raw, sel_batch, sel_scores, config.topk)
    count = graph.op("Cast", [valid], to=TensorProto.INT32)
    graph.op("ReduceSum", [count, graph.const("ax1r", [1], np.int64)], outputs=["num_dets"], keepdims=1)
    # gather from the survivors padded with topk zero rows (TopK may pick a pad column's index)
    pad_boxes = graph.op("Concat", [sel_boxes, graph.const("box_pad", np.zeros((config.topk, 4)), np.float32)], axis=0)
    flat_class = graph.op("Reshape", [sel_class, graph.const("flat", [-1], np.int64)])
    pad_class = graph.op("Concat", [flat_class, graph.const("cls_pad", np.zeros(config.topk), np.int64)], axis=0)
    zero_f = graph.const("zero_f", 0.0, np.float32)
    valid3 = graph.op("Unsqueeze", [valid, graph.const("ax2", [2], np.int64)])
    det_boxes = graph.op("Where", [valid3, graph.op("Gather", [pad_boxes, index], axis=0), zero_f])
    det_scores = graph.op("Where", [valid, values, zero_f])
    classes = graph.op("Gather", [pad_class, index], axis=0)
    det_classes = graph.op("Where", [valid, classes, graph.const("zero_i", 0, np.int64)])
    graph.op("Cast", [det_classes], outputs=["det_classes"], to=TensorProto.INT32)
    graph.op("Cast", [det_boxes], outputs=["det_boxes"], to=float_type)
    graph.op("Cast", [det_scores], outputs=["det_scores"], to=float_type)


def _trt_tail(graph: _Graph, raw: str, float_type: int, config: NMSConfig) -> None:
    """One EfficientNMS_TRT plugin node with TensorRT's documented attributes."""
    boxes, scores = _split_raw(graph, raw)
    graph.op(
        "EfficientNMS_TRT",
        [boxes, scores],
        outputs=list(NMS_OUTPUT_NAMES),
        domain=TRT_DOMAIN,
        background_class=-1,  # a plain INT attribute (the official exports' trailing comma made it a list)
        box_coding=0,  # boxes are corners (x1, y1, x2, y2)
        iou_threshold=float(config.iou),
        score_threshold=float(config.conf),
        max_output_boxes=int(config.topk),
        score_activation=0,  # scores are already sigmoid
        plugin_version="1",
    )


def _raw_output(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    outputs = list(model.graph.output)
    if len(outputs) != 1 or outputs[0].name != RAW_OUTPUT_NAME:
        names = ", ".join(o.name for o in outputs)
        raise ExportError(f"NMS needs a raw graph with the one output {RAW_OUTPUT_NAME!r}, this one has: {names}")
    dims = outputs[0].type.tensor_type.shape.dim
    if len(dims) != 3 or (dims[2].HasField("dim_value") and dims[2].dim_value < 5):
        raise ExportError(f"NMS needs a raw output (B, N, 4 + C); {RAW_OUTPUT_NAME!r} has rank {len(dims)}")
    return outputs[0]


def _output_infos(batch_dim: onnx.TensorShapeProto.Dimension, float_type: int, topk: int) -> list:
    batch = batch_dim.dim_param if batch_dim.HasField("dim_param") else (batch_dim.dim_value or None)
    specs = (
        ("num_dets", TensorProto.INT32, [batch, 1]),
        ("det_boxes", float_type, [batch, topk, 4]),
        ("det_scores", float_type, [batch, topk]),
        ("det_classes", TensorProto.INT32, [batch, topk]),
    )
    return [helper.make_tensor_value_info(name, dtype, shape) for name, dtype, shape in specs]


def append_nms(model: onnx.ModelProto, config: NMSConfig) -> onnx.ModelProto:
    """A copy of a raw-output model (``outputs`` (B, N, 4 + C)) with the NMS tail of ``config.kind``.

    Raises:
        ExportError: the graph does not end in one raw output.

    Example:
        >>> nms_model = append_nms(onnx.load("raw.onnx"), NMSConfig("ort", topk=100))
    """
    if config.kind is NMSKind.NONE:
        return model
    raw = _raw_output(model)
    float_type = raw.type.tensor_type.elem_type
    if float_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        raise ExportError(f"NMS needs a float32/float16 raw output, got {TensorProto.DataType.Name(float_type)}")
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = _Graph(f"nms_{config.kind.value}/")
    (_ort_tail if config.kind is NMSKind.ORT else _trt_tail)(graph, raw.name, float_type, config)
    result.graph.node.extend(graph.nodes)
    result.graph.initializer.extend(graph.initializers)
    del result.graph.output[:]
    result.graph.output.extend(_output_infos(raw.type.tensor_type.shape.dim[0], float_type, config.topk))
    if config.kind is NMSKind.TRT and not any(o.domain == TRT_DOMAIN for o in result.opset_import):
        result.opset_import.append(helper.make_opsetid(TRT_DOMAIN, 1))
    return result
