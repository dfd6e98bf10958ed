"""What keeping one layer float costs at run time, and a partial quantization that buys AP where it is cheap.

Partial quantization (YOLOv6 §2.5.2) keeps the most sensitive layers float. In a detector those are its early,
high-resolution convs, which are also the most expensive to run in float. And a float conv in an int8 chain costs
more than its own arithmetic. ONNX Runtime runs a conv in int8 only as DQ -> Conv -> Q, so the conv that feeds a
float layer loses its output Q and runs float as well. On top of that, the layout switches around the island
(int8 NHWC, float NCHW). On the demo model (Intel Xeon, 224 px, batch 1) one layer kept float cost between -0.04 ms
(the stem: its int8 form is no faster) and +0.46 ms on a 2.1 ms INT8 model. With the six most sensitive layers by MSE
float the model ran 1.38x faster than FP32 instead of 2.04x, 0.43 AP points below FP32. Walking the gain-per-ms
order until the drop was small enough kept three layers float: 2.03x, 0.39 points below FP32 (README, "Cost-aware
partial quantization").

:func:`measure_float_costs` exports the ONNX Runtime Q/DQ graph once with every layer int8 and once for each
candidate with only that layer float. It times all of them interleaved on ONNX Runtime CPU. A layer's cost is its
graph's median minus the all-int8 median. :func:`sensitivity_gains` turns a sensitivity report into the error
each layer removes when it stays float. :func:`cost_aware_order` ranks the candidates by gain per millisecond (a
cost under ``floor_ms``, the timing noise, counts as ``floor_ms``). The rest of the layers follow in sensitivity
order. ``yolodeploy quantize --ptq --sensitive-topk K --cost-aware`` keeps the first K of that order float; with
``--max-ap-drop D`` the greedy search walks it. Like a tuned engine, the result belongs to the machine that timed
it.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from ..bench.latency import time_interleaved
from ..core.preprocess import random_image_batch
from ..errors import ConfigError
from .model import keep_float, quant_layers
from .sensitivity import SensitivityMetric, SensitivityMode, SensitivityReport

__all__ = ["FloatCosts", "sensitivity_gains", "measure_float_costs", "cost_aware_order"]

#: Costs below this share of the all-int8 latency are within the timing noise: they count as this much.
NOISE_FLOOR = 0.01
PAUSE_S = 0.05  # before each model's calls in a round: the other sessions' ORT threads stop spinning


@dataclasses.dataclass
class FloatCosts:
    """Measured ONNX Runtime latency of the all-int8 model and what each candidate adds when it stays float."""

    batch: int
    img_size: int
    threads: int | None
    rounds: int
    int8_ms: float
    costs_ms: dict[str, float]

    @property
    def floor_ms(self) -> float:
        return NOISE_FLOOR * self.int8_ms

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "floor_ms": self.floor_ms}


def _error(stats: dict[str, float], metric: SensitivityMetric) -> float:
    """A metric as an error magnitude (0 for a perfect match): MSE, AP drop, noise power (SNR), 1 - cosine."""
    if metric is SensitivityMetric.SNR:
        return 10.0 ** (-stats[metric.key] / 10.0)
    if metric is SensitivityMetric.COSINE:
        return 1.0 - stats[metric.key]
    return stats[metric.key]


def sensitivity_gains(report: SensitivityReport, metric: SensitivityMetric | str) -> dict[str, float]:
    """Per layer, the output error its staying float removes, by ``metric``.

    One-on: the error of quantizing only that layer. One-off: the all-quantized error minus the error with only
    that layer float (AP: the all-quantized AP drop minus the layer's). Layers without a value are left out.

    Raises:
        ConfigError: the report has no values for ``metric``.
    """
    metric = report.check_metric(metric)
    stats = {name: s for name, s in report.results.items() if metric.key in s}
    if report.config.mode is SensitivityMode.ONE_ON:
        return {name: _error(s, metric) for name, s in stats.items()}
    if metric is SensitivityMetric.AP:
        baseline = report.baseline.get("ap_float", math.nan) - report.baseline.get("ap_quantized", math.nan)
    else:
        baseline = _error(report.baseline, metric)
    return {name: baseline - _error(s, metric) for name, s in stats.items()}


def cost_aware_order(
    ranking: Sequence[str], gains: dict[str, float], costs_ms: dict[str, float], floor_ms: float
) -> list[str]:
    """``ranking``'s layers that have a cost, by gain per millisecond (highest first), then the rest in order.

    Example:
        >>> cost_aware_order(["a", "b", "c"], {"a": 4.0, "b": 2.0, "c": 1.0}, {"a": 2.0, "b": 0.1}, 0.05)
        ['b', 'a', 'c']
    """
    if floor_ms <= 0:
        raise ConfigError(f"floor_ms must be > 0, got {floor_ms}")
    timed = [name for name in ranking if name in costs_ms and name in gains]
    position = {name: i for i, name in enumerate(ranking)}
    timed.sort(key=lambda name: (-gains[name] / max(costs_ms[name], floor_ms), position[name]))
    chosen = set(timed)
    return timed + [name for name in ranking if name not in chosen]


def measure_float_costs(
    qmodel: nn.Module,
    layers: Sequence[str],
    *,
    img_size: int,
    batch: int = 1,
    rounds: int = 10,
    threads: int | None = 2,
    uint8_input: bool = False,
) -> FloatCosts:
    """Time the ONNX Runtime Q/DQ graph of ``qmodel`` with every layer int8, and with each of ``layers`` float.

    ``qmodel`` is calibrated; its quantizers are switched per export and left as they were. Every graph is the
    ``ort`` flavour that ``yolodeploy quantize`` writes (:func:`~yolodeploy.quant.export.build_qdq_graph`; with
    ``uint8_input`` taking raw pixels, as ``quantize --uint8-input`` writes it: a float stem there also costs the
    pixels' float conversion and the column-grouped int8 stem, ``deploy.stem_columns``). The
    graphs are timed round-robin (:func:`~yolodeploy.bench.latency.time_interleaved`, a pause and an untimed call
    before each model's calls), so they share the machine's drift; a cost is a difference of medians.

    Raises:
        ConfigError: no layer, a layer that is not quantized, or ``batch`` / ``rounds`` below 1.
    """
    known = quant_layers(qmodel)
    unknown = [name for name in layers if name not in known]
    if not layers or unknown:
        raise ConfigError(f"float-cost candidates must be quantized layers; got {list(layers)[:3] or 'none'}")
    if batch < 1 or rounds < 1:
        raise ConfigError(f"batch and rounds must be >= 1, got {batch} and {rounds}")
    disabled = [name for name, layer in known.items() if layer.input_quantizer.state.value != "enabled"]
    with tempfile.TemporaryDirectory(prefix="yolodeploy_float_cost_") as folder:
        try:
            paths = {None: _export(qmodel, [], img_size, Path(folder) / "int8.onnx", uint8_input)}
            for index, name in enumerate(layers):
                paths[name] = _export(qmodel, [name], img_size, Path(folder) / f"float_{index}.onnx", uint8_input)
        finally:
            keep_float(qmodel, disabled)
        medians = _time_models(paths, img_size, batch, rounds, threads)
    costs = {name: medians[name] - medians[None] for name in layers}
    return FloatCosts(batch, img_size, threads, rounds, medians[None], costs)


def _export(qmodel: nn.Module, float_layers: list[str], img_size: int, path: Path, uint8_input: bool) -> Path:
    import onnx

    from ..deploy.image_input import to_uint8_input
    from .export import build_qdq_graph

    keep_float(qmodel, float_layers)
    proto, _ = build_qdq_graph(qmodel, img_size=img_size, flavour="ort")
    if uint8_input:
        proto, _ = to_uint8_input(proto, img_size)
    onnx.save(proto, str(path))
    return path


def _time_models(
    paths: dict[str | None, Path], img_size: int, batch: int, rounds: int, threads: int | None
) -> dict[str | None, float]:
    """Median milliseconds per call of each ONNX file on ONNX Runtime CPU, timed round-robin."""
    from ..deploy.runners.onnxrt import ORT_TYPES, import_onnxruntime

    ort = import_onnxruntime()
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    fns = {}
    for key, path in paths.items():
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        image = session.get_inputs()[0]
        feed = random_image_batch(batch, img_size, ORT_TYPES[image.type])  # float NCHW, or uint8 pixels
        fns[key] = partial(session.run, None, {image.name: feed})
    block = 5 if batch == 1 else 1
    stats = time_interleaved(fns, warmup=2, iters=rounds, block=block, settle=1, pause_s=PAUSE_S)
    return {key: stat.p50_ms for key, stat in stats.items()}
