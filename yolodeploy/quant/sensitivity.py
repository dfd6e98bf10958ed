"""Per-layer quantization sensitivity: MSE / SNR / cosine of the outputs, and direct AP (issue 6 item 3).

YOLOv6 paper §2.5.2 and appendix B.2 (Fig. 7, Table 21; https://arxiv.org/abs/2209.02976): quantize one layer at
a time and measure how far the detector's output moves, then keep the most sensitive layers in float (partial
quantization, issue 6 item 4). The paper found MSE the closest to direct AP evaluation, so ``mse`` is the default
ranking metric.

What :func:`analyze_sensitivity` does, and what it costs:

1. **Calibrate once.** Every layer's activation amax comes from one calibration pass (:func:`calibrate`); the
   per-layer runs only switch quantizers on and off, they never recalibrate.
2. **Cache the float reference once.** The float model's raw outputs ``(B, N, 4 + C)`` on the held-out images are
   computed in one pass and kept (with the pre-processed held-out batches), so each layer costs exactly one
   forward pass over the held-out images. Per-layer float *inputs* are not cached: the zoo graphs are not
   sequential (FPN/PAN skips, Concat), so resuming a forward at layer L would need a graph executor, and the
   saving (the part of the network before L) does not justify it.
3. **Cheap metrics for every layer.** ``mode="one-on"`` quantizes only layer L, ``mode="one-off"`` quantizes
   everything but L. One forward gives MSE, SNR (dB) and cosine similarity of the whole raw output against the
   cached float output (:func:`~yolodeploy.quant.primitives.quant_error_stats`, the comparator's own metric).
4. **Direct AP only where asked.** With ``"ap"`` in ``metrics``, ``eval_fn(model) -> AP`` runs on the float model
   once, then for every layer (``ap_top=0``) or only for the ``ap_top`` layers ranked most sensitive by
   ``select_metric``. :func:`ap_evaluator` builds such a callback on a seeded val subset.

Ranking: in one-on the most sensitive layer has the largest MSE / lowest SNR / lowest cosine / largest AP drop;
in one-off, the layer whose staying float gains the most (smallest MSE / highest SNR / highest cosine / smallest
AP drop of "everything but L quantized"). Ties keep model order; everything is deterministic for fixed images,
so a fixed seed gives identical rankings and values.

Example:
    >>> calib, heldout = sensitivity_images("data/", config=SensitivityConfig(images=64))
    >>> report = analyze_sensitivity(
    ...     load_checkpoint("best.safetensors"), calibration_batches(calib, 640),
    ...     heldout=calibration_batches(heldout, 640), config=SensitivityConfig(metrics=("mse", "snr")),
    ... )  # fmt: skip
    >>> print(report.table(k=10)); report.top(6)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..utils.choices import Choice
from ..utils.io import atomic_write_text
from .calibrate import activation_quantizers, calibrate, calibration_images
from .calibrators import CalibMethod
from .model import disable_all, enable_all, quant_layers, quantize_model
from .primitives import quant_error_stats

__all__ = [
    "SensitivityMetric",
    "SensitivityMode",
    "SensitivityConfig",
    "SensitivityReport",
    "analyze_sensitivity",
    "sensitivity_images",
    "ap_evaluator",
]

REPORT_VERSION = 1


class SensitivityMetric(Choice):
    """A sensitivity metric; ``key`` is its field in the per-layer results."""

    MSE = "mse"
    SNR = "snr"
    COSINE = "cosine"
    AP = "ap"

    @classmethod
    def extra_choices(cls) -> tuple[str, ...]:
        return ("all",)

    @property
    def key(self) -> str:
        return {"mse": "mse", "snr": "snr_db", "cosine": "cosine", "ap": "ap_drop"}[self.value]

    @property
    def higher_is_worse(self) -> bool:
        """Whether a larger value means a larger quantization error (MSE, AP drop)."""
        return self in (SensitivityMetric.MSE, SensitivityMetric.AP)


CHEAP_METRICS = (SensitivityMetric.MSE, SensitivityMetric.SNR, SensitivityMetric.COSINE)


class SensitivityMode(Choice):
    """``one-on``: only the layer quantized; ``one-off``: every layer but it quantized."""

    ONE_ON = "one-on"
    ONE_OFF = "one-off"


def _parse_metrics(metrics: Iterable[SensitivityMetric | str] | str) -> tuple[SensitivityMetric, ...]:
    if isinstance(metrics, (str, SensitivityMetric)):
        metrics = [metrics]
    parsed: list[SensitivityMetric] = []
    for metric in metrics:
        for item in list(SensitivityMetric) if metric == "all" else [SensitivityMetric.parse(metric)]:
            if item not in parsed:
                parsed.append(item)
    if not parsed:
        raise ConfigError("give at least one sensitivity metric (mse, snr, cosine, ap or all)")
    return tuple(parsed)


@dataclasses.dataclass(kw_only=True)
class SensitivityConfig:
    """How to analyze sensitivity.

    Args:
        metrics: any of ``mse``, ``snr``, ``cosine``, ``ap`` (or ``"all"``); the first one orders the table.
        mode: ``one-on`` or ``one-off``.
        ap_top: with ``"ap"`` in ``metrics``: evaluate AP only for the ``ap_top`` layers most sensitive by
            ``select_metric`` (0: every layer). Ignored without ``"ap"``.
        select_metric: the cheap metric that picks the ``ap_top`` layers.
        method / percentile: the activation calibrator (and its percentile).
        images: held-out calibration images for the cheap metrics (used by :func:`sensitivity_images`).
        calib_images: calibration images (the rest of the calibration split, at most this many).
        ap_images: val images for direct AP (used by :func:`ap_evaluator`).
        seed: the image sampling seed.
        batch: images per forward pass.
    """

    metrics: tuple[SensitivityMetric, ...] = (SensitivityMetric.MSE,)
    mode: SensitivityMode = SensitivityMode.ONE_ON
    ap_top: int = 0
    select_metric: SensitivityMetric = SensitivityMetric.MSE
    method: CalibMethod = CalibMethod.PERCENTILE
    percentile: float = 99.999
    images: int = 64
    calib_images: int = 512
    ap_images: int = 100
    seed: int = 0
    batch: int = 8
    version: int = REPORT_VERSION

    def __post_init__(self) -> None:
        self.metrics = _parse_metrics(self.metrics)
        self.mode = SensitivityMode.parse(self.mode)
        self.select_metric = SensitivityMetric.parse(self.select_metric)
        self.method = CalibMethod.parse(self.method)
        if self.select_metric not in CHEAP_METRICS:
            raise ConfigError(f"select_metric must be mse, snr or cosine, got {self.select_metric.value!r}")
        for name in ("images", "calib_images", "ap_images", "batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ap_top < 0:
            raise ConfigError(f"ap_top must be >= 0 (0: every layer), got {self.ap_top}")

    @property
    def wants_ap(self) -> bool:
        return SensitivityMetric.AP in self.metrics

    @property
    def needs_cheap_pass(self) -> bool:
        """Whether the per-layer output metrics are computed (asked for, or needed to pick the AP layers)."""
        return any(m in CHEAP_METRICS for m in self.metrics) or (self.wants_ap and self.ap_top > 0)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(
            metrics=[m.value for m in self.metrics],
            mode=self.mode.value,
            select_metric=self.select_metric.value,
            method=self.method.value,
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SensitivityConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- the report --------------------------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    """Non-finite floats as strings ("inf"), so the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode_stats(stats: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in stats.items()}


@dataclasses.dataclass
class SensitivityReport:
    """Per-layer sensitivity, as values.

    Attributes:
        config: the config that produced it.
        layers: the quantizable layers in model order (the x axis of the chart).
        results: per layer ``mse``, ``snr_db``, ``cosine``, ``max_abs`` (when the cheap pass ran) and ``ap``,
            ``ap_drop`` (for the layers whose AP was evaluated).
        baseline: the same stats with every layer quantized, plus ``ap_float`` / ``ap_quantized`` when known.
        amax: the activation amax of every layer (the one calibration).
        images: held-out images the output metrics were computed on.
        timing: seconds spent in ``calibrate``, ``float`` (the cached reference), ``layers``, ``ap``.
    """

    config: SensitivityConfig
    layers: list[str]
    results: dict[str, dict[str, float]]
    baseline: dict[str, float]
    amax: dict[str, float]
    images: int
    timing: dict[str, float]

    def check_metric(self, metric: SensitivityMetric | str) -> SensitivityMetric:
        """``metric`` parsed; ConfigError (naming the metrics it has) when the report has no values for it."""
        metric = SensitivityMetric.parse(metric)
        if not any(metric.key in stats for stats in self.results.values()):
            have = [m.value for m in SensitivityMetric if any(m.key in s for s in self.results.values())]
            raise ConfigError(f"the report has no {metric.value!r} values; it has: {', '.join(have) or 'none'}")
        return metric

    def ranking(self, metric: SensitivityMetric | str = SensitivityMetric.MSE) -> list[str]:
        """Layers from the most to the least sensitive by ``metric`` (only layers that have a value for it).

        One-on: largest MSE / AP drop, lowest SNR / cosine first. One-off: the layer whose staying float gains
        the most first (smallest MSE / AP drop, highest SNR / cosine). Ties keep model order; NaN ranks last.
        """
        metric = self.check_metric(metric)
        worst_first = metric.higher_is_worse == (self.config.mode is SensitivityMode.ONE_ON)
        index = {name: i for i, name in enumerate(self.layers)}

        def key(name: str) -> tuple[bool, float, int]:
            value = self.results[name][metric.key]
            return (math.isnan(value), -value if worst_first else value, index[name])

        return sorted((n for n in self.layers if metric.key in self.results[n]), key=key)

    def top(self, k: int, metric: SensitivityMetric | str = SensitivityMetric.MSE) -> list[str]:
        """The ``k`` most sensitive layers by ``metric`` (what partial quantization keeps float)."""
        return self.ranking(metric)[: max(k, 0)]

    @property
    def primary_metric(self) -> SensitivityMetric:
        """The first configured metric that has values (orders the table)."""
        for metric in self.config.metrics:
            if any(metric.key in stats for stats in self.results.values()):
                return metric
        return SensitivityMetric.MSE

    def table(self, k: int | None = None, metric: SensitivityMetric | str | None = None) -> str:
        """The ranked table (the ``k`` most sensitive layers, or all), aligned, one line per layer."""
        metric = self.primary_metric if metric is None else self.check_metric(metric)
        names = self.ranking(metric)[: k if k is not None else None]
        columns = [m for m in SensitivityMetric if any(m.key in s for s in self.results.values())]
        header = ["rank", "index", "layer"] + [m.key for m in columns]
        rows = [header]
        for rank, name in enumerate(names, 1):
            stats = self.results[name]
            cells = [_format(stats[m.key], m) if m.key in stats else "-" for m in columns]
            rows.append([str(rank), str(self.layers.index(name)), name] + cells)
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) if i == 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows
        ]
        title = (
            f"sensitivity ({self.config.mode.value}, ranked by {metric.value}, {len(self.layers)} layers, "
            f"{self.images} held-out images)"
        )
        return "\n".join([title, *lines])

    def to_dict(self) -> dict[str, Any]:
        have = [m for m in SensitivityMetric if any(m.key in s for s in self.results.values())]
        return {
            "version": REPORT_VERSION,
            "config": self.config.to_dict(),
            "layers": list(self.layers),
            "results": _encode(self.results),
            "baseline": _encode(self.baseline),
            "amax": dict(self.amax),
            "images": self.images,
            "timing": {k: round(v, 4) for k, v in self.timing.items()},
            "rankings": {m.value: self.ranking(m) for m in have},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SensitivityReport:
        """The report :meth:`to_dict` described (``rankings`` are recomputed, not read)."""
        return cls(
            config=SensitivityConfig.from_dict(data["config"]),
            layers=list(data["layers"]),
            results={name: _decode_stats(stats) for name, stats in data["results"].items()},
            baseline=_decode_stats(data.get("baseline", {})),
            amax={k: float(v) for k, v in data.get("amax", {}).items()},
            images=int(data.get("images", 0)),
            timing={k: float(v) for k, v in data.get("timing", {}).items()},
        )

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return Path(path)

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> SensitivityReport:
        """Read a report written by :meth:`save_json`.

        Raises:
            ConfigError: the file is missing or not a sensitivity report.
        """
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: not a readable sensitivity report ({exc})") from None


def _format(value: float, metric: SensitivityMetric) -> str:
    if not math.isfinite(value):
        return str(value)
    if metric is SensitivityMetric.COSINE:  # near 1: the digits that differ are far right
        return f"{value:.8f}"
    return f"{value:.4e}" if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4) else f"{value:.4f}"


# -- the analysis ------------------------------------------------------------------------------------------------


def _prepare_model(model: nn.Module, calib_batches: Iterable[Tensor] | None, config: SensitivityConfig):
    """The quantized model (a float model is quantized first) calibrated once, and the amax values."""
    qmodel = model if quant_layers(model) else quantize_model(model)
    layers = quant_layers(qmodel)
    if calib_batches is not None:
        return qmodel, calibrate(qmodel, calib_batches, method=config.method, percentile=config.percentile)
    quantizers = activation_quantizers(qmodel)
    if not layers or not all(quantizer.is_calibrated for quantizer in quantizers.values()):
        raise ConfigError("the model is not calibrated: pass calibration batches")
    enable_all(qmodel)
    return qmodel, {key: float(quantizer.amax) for key, quantizer in quantizers.items()}


def _run(model: nn.Module, batches: Sequence[Tensor]) -> Tensor:
    """The raw outputs of ``model`` on ``batches``, concatenated along the batch axis."""
    with torch.no_grad():
        outputs = [model(batch) for batch in batches]
    if not all(isinstance(out, Tensor) for out in outputs):
        raise ConfigError("sensitivity analysis needs a model whose eval forward returns one raw output tensor")
    return torch.cat(outputs)


def _set_mode(qmodel: nn.Module, layers: dict[str, nn.Module], name: str | None, mode: SensitivityMode) -> None:
    """Quantize only ``name`` (one-on) or everything but ``name`` (one-off); ``name=None``: everything."""
    if name is None or mode is SensitivityMode.ONE_OFF:
        enable_all(qmodel)
        if name is not None:
            layers[name].disable()
    else:
        disable_all(qmodel)
        layers[name].enable()


def _cheap_metrics(qmodel, layers, heldout, reference, mode) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    results = {}
    for name in layers:
        _set_mode(qmodel, layers, name, mode)
        results[name] = quant_error_stats(reference, _run(qmodel, heldout))
    _set_mode(qmodel, layers, None, mode)
    return results, quant_error_stats(reference, _run(qmodel, heldout))


def _ap_layers(config: SensitivityConfig, layers: list[str], results: dict[str, dict[str, float]]) -> list[str]:
    if config.ap_top == 0:
        return list(layers)
    partial = SensitivityReport(config, layers, results, {}, {}, 0, {})
    return partial.top(config.ap_top, config.select_metric)


def _direct_ap(qmodel, layers, selected, eval_fn, mode) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    disable_all(qmodel)
    ap_float = float(eval_fn(qmodel))
    baseline = {"ap_float": ap_float}
    if mode is SensitivityMode.ONE_OFF:
        _set_mode(qmodel, layers, None, mode)
        baseline["ap_quantized"] = float(eval_fn(qmodel))
    results = {}
    for name in selected:
        _set_mode(qmodel, layers, name, mode)
        ap = float(eval_fn(qmodel))
        results[name] = {"ap": ap, "ap_drop": ap_float - ap}
    return results, baseline


def analyze_sensitivity(
    model: nn.Module,
    calib_batches: Iterable[Tensor] | None,
    *,
    config: SensitivityConfig | None = None,
    heldout: Iterable[Tensor] | None = None,
    eval_fn: Callable[[nn.Module], float] | None = None,
) -> SensitivityReport:
    """Measure how much quantizing each layer moves the model's output (and, if asked, its AP).

    Args:
        model: a float zoo detector (quantized here, on a copy) or a model from :func:`quantize_model`, which is
            then changed in place: calibrated, and left with every quantizer enabled.
        calib_batches: calibration batches; ``None`` keeps a quantized model's existing amax.
        config: what to measure (default: MSE, one-on, percentile 99.999 calibration).
        heldout: batches the output metrics are computed on (held-out calibration images); default: the
            calibration batches themselves.
        eval_fn: ``eval_fn(model) -> AP`` of the model as currently switched; needed when ``"ap"`` is asked
            (see :func:`ap_evaluator`).

    Returns:
        A :class:`SensitivityReport`.

    Raises:
        ConfigError: ``"ap"`` without ``eval_fn``, no held-out batch, an uncalibrated model without batches.
        CalibrationError: no quantized layer or no calibration batch.

    Example:
        >>> report = analyze_sensitivity(model, calibration_batches(paths, 640), config=SensitivityConfig())
        >>> report.top(6)
    """
    config = config or SensitivityConfig()
    if config.wants_ap and eval_fn is None:
        raise ConfigError("metric 'ap' needs eval_fn(model) -> AP (see ap_evaluator)")
    timing: dict[str, float] = {}
    tick = time.perf_counter()
    calib_batches = None if calib_batches is None else list(calib_batches)
    qmodel, amax = _prepare_model(model, calib_batches, config)
    timing["calibrate"] = time.perf_counter() - tick
    layers = quant_layers(qmodel)
    was_training = qmodel.training
    qmodel.eval()
    try:
        results: dict[str, dict[str, float]] = {name: {} for name in layers}
        baseline: dict[str, float] = {}
        images = 0
        if config.needs_cheap_pass:
            batches = list(heldout) if heldout is not None else (calib_batches or [])
            if not batches:
                raise ConfigError("no held-out batch to compute the output metrics on")
            images = sum(int(batch.shape[0]) for batch in batches)
            tick = time.perf_counter()
            disable_all(qmodel)
            reference = _run(qmodel, batches)  # the cached float outputs: computed once, reused for every layer
            timing["float"] = time.perf_counter() - tick
            tick = time.perf_counter()
            cheap, baseline = _cheap_metrics(qmodel, layers, batches, reference, config.mode)
            timing["layers"] = time.perf_counter() - tick
            for name, stats in cheap.items():
                results[name].update(stats)
        if config.wants_ap:
            tick = time.perf_counter()
            selected = _ap_layers(config, list(layers), results)
            ap_results, ap_baseline = _direct_ap(qmodel, layers, selected, eval_fn, config.mode)
            timing["ap"] = time.perf_counter() - tick
            baseline.update(ap_baseline)
            for name, stats in ap_results.items():
                results[name].update(stats)
    finally:
        enable_all(qmodel)
        qmodel.train(was_training)
    return SensitivityReport(config, list(layers), results, baseline, amax, images, timing)


# -- data for the CLI (and for partial quantization) --------------------------------------------------------------


def sensitivity_images(
    source: str | os.PathLike, *, split: str = "calib", config: SensitivityConfig | None = None
) -> tuple[list[Path], list[Path]]:
    """``(calibration, held_out)`` image lists from one calibration split, disjoint and seeded.

    ``config.images`` images are held out for the output metrics; up to ``config.calib_images`` of the rest
    calibrate. A split too small for both calibrates on the held-out images too (the only overlap).

    Example:
        >>> calib, heldout = sensitivity_images("data/", config=SensitivityConfig(images=64))
    """
    config = config or SensitivityConfig()
    everything = calibration_images(source, split=split, count=10**9, seed=config.seed)
    shuffled = list(everything)
    random.Random(config.seed).shuffle(shuffled)
    heldout = sorted(shuffled[: config.images])
    calib = sorted(shuffled[config.images : config.images + config.calib_images]) or list(heldout)
    return calib, heldout


@contextlib.contextmanager
def ap_evaluator(
    data: str | os.PathLike,
    *,
    img_size: int,
    split: str = "val",
    images: int = 100,
    seed: int = 0,
    batch: int = 8,
) -> Iterator[Callable[[nn.Module], float]]:
    """A context giving ``eval_fn(model) -> COCO AP`` on a seeded subset of ``images`` val images.

    The subset's annotation file lives in a temporary folder removed on exit. The model runs as given
    (quantizers as currently switched), through the torch runner and the evaluation pipeline of ``yolodeploy eval``.

    Raises:
        DatasetError: a missing split or annotation file.

    Example:
        >>> with ap_evaluator("data/", img_size=640, images=100) as eval_fn:
        ...     report = analyze_sensitivity(model, batches, config=config, eval_fn=eval_fn)
    """
    from ..core.evaluation_run import EvalConfig, evaluate_model, resolve_split
    from ..deploy.runners.torch_runner import TorchRunner

    image_dir, ann_file = resolve_split(EvalConfig(model="-", data=str(data), split=split, img_size=img_size))
    coco = json.loads(ann_file.read_text())
    entries = list(coco.get("images", []))
    if len(entries) > images:
        entries = sorted(random.Random(seed).sample(entries, images), key=lambda e: e["id"])
    keep = {entry["id"] for entry in entries}
    subset = {
        **coco,
        "images": entries,
        "annotations": [a for a in coco.get("annotations", []) if a["image_id"] in keep],
    }
    with tempfile.TemporaryDirectory(prefix="yolodeploy_ap_") as tmp:
        subset_file = Path(tmp) / f"instances_{split}_subset.json"
        subset_file.write_text(json.dumps(subset))
        config = EvalConfig(
            model="sensitivity", annotation_file=str(subset_file), image_dir=str(image_dir), backend="torch",
            img_size=img_size, batch=batch,
        )  # fmt: skip

        def eval_fn(model: nn.Module) -> float:
            return float(evaluate_model(config, runner=TorchRunner(model, reparameterize=False)).metrics.ap)

        yield eval_fn
