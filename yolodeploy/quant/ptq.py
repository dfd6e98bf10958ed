"""Post-training quantization end to end: calibrate, (partially) quantize, export, check parity, measure AP.

YOLOv6 paper §2.5 and §3.5 (https://arxiv.org/abs/2209.02976): PTQ of the re-parameterized network, and partial
quantization that keeps the layers most sensitive by MSE in float (issue 6 items 4, 7 and 8). :func:`run_ptq`:

1. load the float model; export it to FP32 ONNX (``fp32.onnx``) and measure the **baseline AP on ONNX Runtime**;
2. :func:`~yolodeploy.quant.model.quantize_model` and :func:`~yolodeploy.quant.calibrate.calibrate_cached`
   (manifest-keyed cache, default ``OUTPUT/calib_cache``);
3. with ``sensitive_topk`` or ``max_ap_drop``: rank the layers by
   :func:`~yolodeploy.quant.sensitivity.analyze_sensitivity` (held-out calibration images) and keep the top ones
   float (their quantizers disabled; the calibration stays valid). ``max_ap_drop`` then adds float layers in
   ranking order, one at a time, until the fake-quant AP drop (torch runner, same val subset) is ``<= D``,
   recording the AP after each added layer; the final ONNX Runtime AP confirms it;
4. export Q/DQ ONNX in both flavours (``int8_ort.onnx`` uint8 activations for ORT on x86, ``int8_trt.onnx`` for
   TensorRT), in memory first: **parity before accuracy** — each graph is checked against the fake-quant model
   on held-out calibration images and nothing is written if it fails (:class:`~yolodeploy.errors.ExportError`);
   with ``uint8_input``, ``fp32.onnx`` and the ORT file then take raw uint8 pixels (checked identical);
5. AP of the INT8 model on ONNX Runtime; the quantized checkpoint ``int8.safetensors`` with the calibration
   method, manifest hash and float layers in its metadata; optional latency (``bench_batch_sizes``);
6. with ``qat`` (a :class:`~yolodeploy.quant.qat.QATConfig`): quantization-aware training of a copy of the
   calibrated model, distilled from the float model, then the same export, parity and AP steps and a ``qat`` row
   (:func:`yolodeploy.quant.qat_run.run_qat_stage`; ``qat.safetensors``);
7. the report (:func:`~yolodeploy.quant.report.write_report`). A partial run also measures plain PTQ, so the
   report shows FP32, PTQ, partial PTQ and QAT side by side; every row records ``command``, the argv of the run.

Every file is written atomically.

Example:
    >>> result = run_ptq(PTQConfig(model="best.safetensors", data="data/", output="runs/ptq", sensitive_topk=6))
    >>> print(result.table())
    >>> run_ptq(PTQConfig(model="best.safetensors", data="data/", output="runs/qat", qat=QATConfig(img_size=224)))
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError, DatasetError, ExportError
from .calibrate import calibrate_cached, calibration_batches
from .calibrators import CalibMethod
from .model import disable_all, keep_float, quant_layers, quantize_model, set_layer_enabled
from .qat import QATConfig
from .report import REPORT_STEM, quant_record, report_table, write_report

__all__ = ["PTQ_VERSION", "PTQConfig", "PTQResult", "run_ptq"]

logger = logging.getLogger(__name__)

PTQ_VERSION = 1
BENCH_BACKENDS = ("ort", "openvino")  # CPU runtimes that run the Q/DQ files in int8
_METRICS = ("mse", "snr", "cosine", "ap")


@dataclasses.dataclass(kw_only=True)
class PTQConfig:
    """What to quantize and how.

    The default calibrator is **percentile 99.999**, chosen by measurement: on the demo model (yolov6n, 224,
    128 calibration images, 500 val images, PyTorch fake quant, ORT form) the AP drops were entropy 1.65 points,
    max 0.81, mse 0.82, percentile 99.99 0.89, percentile 99.999 0.62. Entropy (TensorRT's
    ``IInt8EntropyCalibrator2``) clips the long post-ReLU tails of this detector too hard. It is also the
    default of the sensitivity analysis, so the ranking and the final model see the same ranges.

    Args:
        model: checkpoint path (or registry name: random weights, for tests).
        data: dataset root (``images/<split>``, ``annotations/instances_<split>.json``).
        output: folder for every file written.
        img_size: square letterbox size (multiple of 32).
        calib_split / calib_images: calibration split and image count (all of them if fewer).
        heldout_images: calibration-split images held out for parity and sensitivity (disjoint from the
            calibration images unless the split is too small for both).
        sensitivity_images: images the sensitivity ranking measures the output error on: the held-out ones,
            then calibration images up to this count (8 gave a noisier ranking on the demo model).
        method / percentile: the activation calibrator.
        sensitive_topk: layers kept float by sensitivity (0: plain PTQ).
        metric: the sensitivity ranking metric (mse, as the paper found closest to direct AP).
        max_ap_drop: greedily add float layers until the AP drop is at most this (AP points in [0, 1]).
        cost_aware: pick the float layers by sensitivity per millisecond of measured ONNX Runtime latency that
            keeping each one float adds (:mod:`yolodeploy.quant.float_cost`), not by sensitivity alone.
        cost_candidates / cost_batch / cost_rounds: how many of the most sensitive layers are timed, at which
            batch size, over how many interleaved rounds.
        val_split / val_images: AP split and a seeded subset size (None: the whole split).
        border: letterbox border (YOLOv6 §3.1), for calibration and evaluation alike.
        seed: image sampling seed.
        batch: images per forward / inference call.
        cache_dir: calibration cache (None: ``OUTPUT/calib_cache``).
        bench_batch_sizes / bench_iters: ORT latency of the FP32 and INT8 files (empty: not measured).
        bench_backend: where that latency is measured: ``ort`` (ONNX Runtime CPU) or ``openvino`` (OpenVINO CPU).
        uint8_input: ``fp32.onnx`` and the ORT-flavour INT8 files take raw uint8 ``(B, H, W, 3)`` pixels
            (``deploy.image_input.to_uint8_input``: identical outputs, checked); the TensorRT flavour keeps float.
        command: the argv that produced the run (recorded in the report and in every row).
        qat: also run QAT with these hyper-parameters (None: PTQ only); ``qat.img_size`` must equal ``img_size``.
        qat_partial: QAT starts from the partial PTQ model (its float layers stay float) instead of every layer
            quantized; needs ``sensitive_topk`` or ``max_ap_drop``.
        qat_val_images: val images of the per-epoch fake-quant AP that picks the best QAT epoch (None: the AP
            rows' subset, so the ``qat`` AP is measured on the images that chose the epoch; 0: no per-epoch AP,
            the last epoch is kept).
    """

    model: str
    data: str
    output: str
    img_size: int = 224
    calib_split: str = "calib"
    calib_images: int = 512
    heldout_images: int = 8
    sensitivity_images: int = 64
    method: CalibMethod = CalibMethod.PERCENTILE
    percentile: float = 99.999
    sensitive_topk: int = 0
    metric: str = "mse"
    max_ap_drop: float | None = None
    cost_aware: bool = False
    cost_candidates: int = 20
    cost_batch: int = 1
    cost_rounds: int = 10
    val_split: str = "val"
    val_images: int | None = None
    border: int = 0
    seed: int = 0
    batch: int = 8
    cache_dir: str | None = None
    bench_batch_sizes: tuple[int, ...] = ()
    bench_iters: int = 10
    bench_backend: str = "ort"
    uint8_input: bool = False
    command: str | None = None
    qat: QATConfig | None = None
    qat_partial: bool = False
    qat_val_images: int | None = None
    version: int = PTQ_VERSION

    def __post_init__(self) -> None:
        self.method = CalibMethod.parse(self.method)
        self.bench_batch_sizes = tuple(int(b) for b in self.bench_batch_sizes)
        if self.img_size <= 0 or self.img_size % 32:
            raise ConfigError(f"img_size must be a positive multiple of 32, got {self.img_size}")
        if self.sensitive_topk < 0:
            raise ConfigError(f"sensitive_topk must be >= 0 (0: plain PTQ), got {self.sensitive_topk}")
        if self.metric not in _METRICS:
            raise ConfigError(f"metric must be one of {', '.join(_METRICS)}, got {self.metric!r}")
        if self.max_ap_drop is not None and not 0 <= self.max_ap_drop <= 1:
            raise ConfigError(f"max_ap_drop is in AP points in [0, 1] (0.005 = half a point), got {self.max_ap_drop}")
        if self.cost_aware and not self.partial:
            raise ConfigError("--cost-aware picks the float layers: add --sensitive-topk K or --max-ap-drop D")
        names = ("calib_images", "heldout_images", "sensitivity_images", "batch", "bench_iters", "cost_candidates",
                 "cost_batch", "cost_rounds")  # fmt: skip
        for name in names:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.val_images is not None and self.val_images < 1:
            raise ConfigError(f"val_images must be >= 1 (None: the whole split), got {self.val_images}")
        if any(b < 1 for b in self.bench_batch_sizes):
            raise ConfigError(f"bench batch sizes must be >= 1, got {self.bench_batch_sizes}")
        if self.bench_backend not in BENCH_BACKENDS:
            raise ConfigError(f"bench_backend must be one of {', '.join(BENCH_BACKENDS)}, got {self.bench_backend!r}")
        self._check_qat()

    def _check_qat(self) -> None:
        if isinstance(self.qat, dict):
            self.qat = QATConfig.from_dict(self.qat)
        if self.qat is None:
            if self.qat_partial or self.qat_val_images is not None:
                raise ConfigError("qat_partial (--partial) and qat_val_images apply to QAT: set qat (--qat)")
            return
        if self.qat_partial and not self.partial:
            raise ConfigError("QAT from the partial model (--partial) needs --sensitive-topk K or --max-ap-drop D")
        if self.qat.img_size != self.img_size:
            raise ConfigError(
                f"qat.img_size {self.qat.img_size} differs from img_size {self.img_size}: QAT trains at the size "
                f"the model is calibrated and evaluated at; pass QATConfig(img_size={self.img_size})"
            )
        if self.qat_val_images is not None and self.qat_val_images < 0:
            raise ConfigError(f"qat_val_images must be >= 0 (0: keep the last epoch), got {self.qat_val_images}")

    @property
    def partial(self) -> bool:
        return self.sensitive_topk > 0 or self.max_ap_drop is not None

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.output) / "calib_cache"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(method=self.method.value, bench_batch_sizes=list(self.bench_batch_sizes))
        data["qat"] = self.qat.to_dict() if self.qat is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PTQConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclasses.dataclass
class PTQResult:
    """What :func:`run_ptq` measured and wrote.

    Attributes:
        rows: per model (``fp32``, ``ptq``, ``ptq_top<K>``, ``qat``) ``ap``, ``ap50``, ``command`` and, when
            benchmarked, ``latency_ms`` (:func:`~yolodeploy.quant.report.quant_record`).
        float_layers: the layers kept float by sensitivity (empty for plain PTQ), most sensitive first.
        greedy: ``max_ap_drop`` steps: ``{"float_layers": n, "layer": name, "ap": .., "ap_drop": ..}``.
        parity: per INT8 file, :meth:`ParityReport.to_dict`.
        calibration: method, image count, manifest sha256, whether the cache was reused, and the note.
        files: what was written, by role.
        notes: warnings worth reading beside the numbers.
        qat: the QAT stage (None without it): ``start`` row, ``float_layers``, per-epoch ``history``,
            ``best_epoch`` / ``best_ap`` (fake-quant AP on ``val_images``), ``config``.
        float_costs: with ``cost_aware``: the timed candidates in the order chosen from (gain, cost, gain per ms,
            sensitivity rank) and the timing settings (:func:`_cost_aware_ranking`).
    """

    config: PTQConfig
    rows: dict[str, dict[str, Any]]
    float_layers: list[str]
    greedy: list[dict[str, Any]]
    parity: dict[str, dict[str, Any]]
    calibration: dict[str, Any]
    files: dict[str, str]
    notes: list[str]
    qat: dict[str, Any] | None = None
    float_costs: dict[str, Any] | None = None

    @property
    def int8_key(self) -> str:
        """The row of the delivered INT8 model (``ptq`` or ``ptq_top<K>``)."""
        return f"ptq_top{len(self.float_layers)}" if self.float_layers else "ptq"

    @property
    def ap_drop(self) -> float:
        return self.rows["fp32"]["ap"] - self.rows[self.int8_key]["ap"]

    @property
    def cached(self) -> bool:
        return bool(self.calibration.get("cached"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PTQ_VERSION,
            "config": self.config.to_dict(),
            "command": self.config.command,
            "rows": self.rows,
            "int8": self.int8_key,
            "ap_drop": self.ap_drop,
            "float_layers": list(self.float_layers),
            "greedy": self.greedy,
            "parity": self.parity,
            "calibration": self.calibration,
            "files": self.files,
            "notes": self.notes,
            "qat": self.qat,
            "float_costs": self.float_costs,
        }

    def record(self) -> dict[str, Any]:
        """The per-model record (``--json FILE``): :func:`~yolodeploy.quant.report.quant_record`."""
        return quant_record(self.to_dict())

    def table(self) -> str:
        return report_table(self.to_dict())


# -- steps ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Run:
    """What the stages of one :func:`run_ptq` share: the inputs, and everything measured and written so far."""

    config: PTQConfig
    heldout: list[Path]
    split: tuple[Path, Path]
    calib: list[Path] = dataclasses.field(default_factory=list)
    rows: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    onnx: dict[str, Path] = dataclasses.field(default_factory=dict)  # the ORT file of each row, for the latency
    int8_convs: dict[Path, int] = dataclasses.field(default_factory=dict)  # QLinearConvs ORT runs, per ORT file
    parity: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    float_costs: dict[str, Any] | None = None

    @property
    def sensitivity_images(self) -> list[Path]:
        """The held-out images, then calibration images, ``config.sensitivity_images`` in all (if there are)."""
        heldout = set(self.heldout)
        extra = [path for path in self.calib if path not in heldout]
        return (self.heldout + extra)[: max(self.config.sensitivity_images, len(self.heldout))]

    @property
    def out(self) -> Path:
        return Path(self.config.output)


def _check_inputs(config: PTQConfig) -> None:
    from ..core.evaluation_run import EvalConfig, resolve_split
    from ..models import is_model

    if not Path(config.model).exists() and not is_model(config.model):
        raise ConfigError(f"model {config.model}: no such checkpoint (and not a registry name)")
    if not Path(config.data).is_dir():
        raise DatasetError(f"data {config.data}: no such dataset directory")
    if config.qat is not None:  # before hours of PTQ, not after
        resolve_split(EvalConfig(model="-", data=config.data, split=config.qat.train_split))


@contextlib.contextmanager
def _val_subset(config: PTQConfig, images: int | None) -> Iterator[tuple[Path, Path]]:
    """``(image_dir, annotation_file)`` of a seeded subset of ``images`` val images (None: all of them)."""
    from ..core.evaluation_run import EvalConfig, resolve_split

    image_dir, ann_file = resolve_split(
        EvalConfig(model="-", data=config.data, split=config.val_split, img_size=config.img_size)
    )
    coco = json.loads(ann_file.read_text())
    entries = list(coco.get("images", []))
    if images is None or len(entries) <= images:
        yield image_dir, ann_file
        return
    entries = sorted(random.Random(config.seed).sample(entries, images), key=lambda e: e["id"])
    keep = {entry["id"] for entry in entries}
    subset = {**coco, "images": entries, "annotations": [a for a in coco["annotations"] if a["image_id"] in keep]}
    with tempfile.TemporaryDirectory(prefix="yolodeploy_ptq_") as tmp:
        path = Path(tmp) / f"instances_{config.val_split}_subset.json"
        path.write_text(json.dumps(subset))
        yield image_dir, path


def _eval_config(config: PTQConfig, split: tuple[Path, Path], model: str, backend: str):
    from ..core.evaluation_run import EvalConfig

    return EvalConfig(
        model=model, image_dir=str(split[0]), annotation_file=str(split[1]), backend=backend,
        img_size=config.img_size, border=config.border, batch=config.batch,
    )  # fmt: skip


def _measure(run: _Run, key: str, path: Path) -> None:
    """The ``key`` row: AP and AP50 of the ONNX file ``path`` on ONNX Runtime (its latency comes later)."""
    from ..core.evaluation_run import evaluate_model

    metrics = evaluate_model(_eval_config(run.config, run.split, str(path), "ort")).metrics
    run.rows[key] = {"ap": float(metrics.ap), "ap50": float(metrics.ap50)}
    run.onnx[key] = path


def _torch_ap(config: PTQConfig, split: tuple[Path, Path], model: nn.Module) -> float:
    from ..core.evaluation_run import evaluate_model
    from ..deploy.runners.torch_runner import TorchRunner

    runner = TorchRunner(model, reparameterize=False)
    return float(evaluate_model(_eval_config(config, split, "ptq", "torch"), runner=runner).metrics.ap)


def _export_checked(qmodel: nn.Module, run: _Run, stem: str, role: str) -> Path:
    """Both Q/DQ flavours of ``qmodel``: built in memory, parity-checked, then written. Returns the ORT file."""
    import onnx

    from ..deploy.image_input import to_uint8_input
    from ..utils.io import atomic_path
    from .export import build_qdq_graph, check_qdq_parity

    config, built = run.config, {}
    paths = {flavour: run.out / f"{stem}_{flavour}.onnx" for flavour in ("ort", "trt")}
    for flavour, path in paths.items():
        proto, report = build_qdq_graph(qmodel, img_size=config.img_size, flavour=flavour)
        if report.ort_ops is not None:
            run.int8_convs[path] = report.ort_ops.get("QLinearConv", 0)
        batches = calibration_batches(run.heldout, config.img_size, config.batch, border=config.border)
        parity = check_qdq_parity(qmodel, proto, batches, flavour=flavour)
        run.parity[f"{role}_{flavour}"] = parity.to_dict()
        if not parity.ok:
            raise ExportError(
                f"the {flavour} Q/DQ ONNX does not match the fake-quant model, no AP reported and nothing written: "
                f"{parity.summary()}"
            )
        if flavour == "ort" and config.uint8_input:
            proto, lines = to_uint8_input(proto, config.img_size)
            run.notes.append(f"{paths[flavour].name}: {'; '.join(lines)}")
        built[flavour] = proto
    for flavour, proto in built.items():
        with atomic_path(paths[flavour]) as tmp:
            onnx.save(proto, str(tmp))
        run.files[f"{role}_{flavour}_onnx"] = str(paths[flavour])
    return paths["ort"]


def _rank_layers(run: _Run, qmodel: nn.Module) -> list[str]:
    """The quantized layers from the most to the least sensitive by ``config.metric`` (model left all enabled);
    with ``cost_aware``, the timed candidates first by sensitivity per millisecond (``run.float_costs``)."""
    from .sensitivity import SensitivityConfig, analyze_sensitivity

    config = run.config
    sens = SensitivityConfig(metrics=(config.metric,), method=config.method, percentile=config.percentile)
    eval_fn = (lambda model: _torch_ap(config, run.split, model)) if config.metric == "ap" else None
    batches = list(calibration_batches(run.sensitivity_images, config.img_size, config.batch, border=config.border))
    report = analyze_sensitivity(qmodel, None, config=sens, heldout=batches, eval_fn=eval_fn)
    ranking = report.ranking(config.metric)
    if config.cost_aware:
        ranking, run.float_costs = _cost_aware_ranking(qmodel, config, ranking, report)
    return ranking


def _cost_aware_ranking(qmodel: nn.Module, config: PTQConfig, ranking: list[str], report) -> tuple[list[str], dict]:
    """The ``cost_candidates`` most sensitive layers timed float one at a time and ordered by gain per ms, then
    the rest of ``ranking``; and the record of it."""
    from .float_cost import cost_aware_order, measure_float_costs, sensitivity_gains

    candidates = ranking[: config.cost_candidates]
    costs = measure_float_costs(
        qmodel, candidates, img_size=config.img_size, batch=config.cost_batch, rounds=config.cost_rounds,
        uint8_input=config.uint8_input,
    )  # fmt: skip
    gains = sensitivity_gains(report, config.metric)
    order = cost_aware_order(ranking, gains, costs.costs_ms, costs.floor_ms)
    rank = {name: i + 1 for i, name in enumerate(ranking)}
    rows = [
        {"layer": name, "sensitivity_rank": rank[name], "gain": gains[name], "cost_ms": costs.costs_ms[name],
         "gain_per_ms": gains[name] / max(costs.costs_ms[name], costs.floor_ms)}
        for name in order[: len(candidates)]
    ]  # fmt: skip
    record = {key: value for key, value in costs.to_dict().items() if key != "costs_ms"}
    return order, {**record, "metric": config.metric, "candidates": rows}


def _choose_float_layers(qmodel, config: PTQConfig, ranking: list[str], split, greedy: list) -> list[str]:
    """The top-k layers, then (``max_ap_drop``) one more at a time until the fake-quant AP drop is small enough."""
    if config.sensitive_topk > len(ranking):
        raise ConfigError(
            f"--sensitive-topk {config.sensitive_topk} is larger than the {len(ranking)} quantized layers"
        )
    chosen = ranking[: config.sensitive_topk]
    set_layer_enabled(qmodel, chosen, False)
    if config.max_ap_drop is None:
        return chosen
    disable_all(qmodel)
    float_ap = _torch_ap(config, split, qmodel)
    keep_float(qmodel, chosen)
    while True:
        ap = _torch_ap(config, split, qmodel)
        greedy.append({"float_layers": len(chosen), "layer": chosen[-1] if chosen else None, "ap": ap,
                       "ap_drop": float_ap - ap, "float_ap": float_ap})  # fmt: skip
        if float_ap - ap <= config.max_ap_drop or len(chosen) == len(ranking):
            return chosen
        chosen.append(ranking[len(chosen)])
        set_layer_enabled(qmodel, chosen[-1], False)


def _ptq_rows(run: _Run, qmodel: nn.Module) -> tuple[list[str], list[dict[str, Any]]]:
    """The ``ptq`` row, and for a partial run the ``ptq_top<K>`` row: ``(float_layers, greedy steps)``."""
    float_layers: list[str] = []
    greedy: list[dict[str, Any]] = []
    if run.config.partial:
        _measure(run, "ptq", _export_checked(qmodel, run, "ptq", "ptq"))
        ranking = _rank_layers(run, qmodel)
        float_layers = _choose_float_layers(qmodel, run.config, ranking, run.split, greedy)
        if greedy and run.config.bench_batch_sizes:
            _greedy_latency(run.config, qmodel, float_layers, greedy)
    stem = f"int8_top{len(float_layers)}" if float_layers else "int8"
    _measure(run, f"ptq_top{len(float_layers)}" if float_layers else "ptq", _export_checked(qmodel, run, stem, "int8"))
    return float_layers, greedy


def _greedy_latency(config: PTQConfig, qmodel: nn.Module, float_layers: list[str], greedy: list) -> None:
    """Add to each ``max_ap_drop`` step the ORT latency of its INT8 model and ``latency_cost_ms``, the latency
    the layer it kept float added (vs the step before). Steps are timed one after another (not interleaved):
    costs smaller than the run-to-run noise of the machine (a few %) mean "no measurable cost"."""
    import onnx

    from .export import build_qdq_graph

    previous: dict[str, float] | None = None
    with tempfile.TemporaryDirectory(prefix="yolodeploy_greedy_") as folder:
        for step in greedy:
            keep_float(qmodel, float_layers[: step["float_layers"]])
            proto, _ = build_qdq_graph(qmodel, img_size=config.img_size, flavour="ort")
            path = Path(folder) / f"step{step['float_layers']}.onnx"
            onnx.save(proto, str(path))
            step["latency_ms"] = _bench(config, path)
            if previous is not None:
                step["latency_cost_ms"] = {bs: ms - previous[bs] for bs, ms in step["latency_ms"].items()}
            previous = step["latency_ms"]
    keep_float(qmodel, float_layers)


def _bench(config: PTQConfig, path: Path) -> dict[str, float]:
    from ..bench.harness import BenchConfig, run_benchmark

    bench = BenchConfig(
        model=str(path), backend=config.bench_backend, batch_sizes=config.bench_batch_sizes, img_size=config.img_size,
        warmup=2, iters=config.bench_iters, reference=False,
    )  # fmt: skip
    result = run_benchmark(bench)
    return {str(b.batch_size): b.latency.p50_ms for b in result.batches}


def _finish_rows(run: _Run) -> None:
    """Latency of every row's ONNX file (``bench_batch_sizes``), after all AP runs; ``command`` on every row."""
    for key, path in run.onnx.items():
        if run.config.bench_batch_sizes:
            run.rows[key]["latency_ms"] = _bench(run.config, path)
        run.rows[key]["command"] = run.config.command


# -- the pipeline ----------------------------------------------------------------------------------------------------


def _load(config: PTQConfig) -> tuple[nn.Module, nn.Module, list[Path], list[Path]]:
    """``(float model, quantized model, calibration images, held-out images)``; raises before anything is written."""
    from ..deploy.export import load_model_source
    from .sensitivity import SensitivityConfig, sensitivity_images

    _check_inputs(config)
    images = SensitivityConfig(images=config.heldout_images, calib_images=config.calib_images, seed=config.seed)
    calib, heldout = sensitivity_images(config.data, split=config.calib_split, config=images)
    model = load_model_source(config.model)
    qmodel = quantize_model(model)
    if config.sensitive_topk > len(quant_layers(qmodel)):
        raise ConfigError(
            f"--sensitive-topk {config.sensitive_topk} is larger than the {len(quant_layers(qmodel))} quantized layers"
        )
    return model, qmodel, calib, heldout


def _calibrate(run: _Run, qmodel: nn.Module, calib: list[Path]) -> dict[str, Any]:
    """Calibrate ``qmodel`` (cached); returns the calibration metadata of the report and the checkpoints."""
    config = run.config
    calibration = calibrate_cached(
        qmodel, calib, config.cache_path, img_size=config.img_size, batch=config.batch, method=config.method,
        percentile=config.percentile,
    )  # fmt: skip
    return {
        "method": config.method.value, "percentile": config.percentile, "images": calibration.manifest.count,
        "manifest_sha256": calibration.manifest.sha256(), "cached": calibration.cached, "note": calibration.note,
    }  # fmt: skip


def _save_int8(run: _Run, qmodel: nn.Module, float_layers: list[str], calibration: dict[str, Any]) -> None:
    from .calibrate import model_hash
    from .model import save_quantized

    stem = f"int8_top{len(float_layers)}" if float_layers else "int8"
    ckpt = save_quantized(
        qmodel, run.out / f"{stem}.safetensors", calibration=calibration,
        ptq={"float_layers": float_layers, "metric": run.config.metric, "model_hash": model_hash(qmodel)},
    )  # fmt: skip
    run.files["int8_checkpoint"] = str(ckpt)


def run_ptq(config: PTQConfig) -> PTQResult:
    """Post-training quantization of ``config.model`` (then QAT with ``config.qat``); see the module docstring.

    Returns:
        A :class:`PTQResult` (``rows``, ``ap_drop``, ``float_layers``, ``parity``, ``files``, ``qat``); the report
        is written to ``OUTPUT/quant_report.{md,json}``.

    Raises:
        ConfigError / DatasetError: a missing model, dataset or QAT train split, ``sensitive_topk`` above the
        layer count. CalibrationError: no calibration image. ExportError: an export or a parity check failed.

    Example:
        >>> result = run_ptq(PTQConfig(model="best.safetensors", data="data/", output="runs/ptq"))
        >>> result.rows["ptq"]["ap"], result.files["int8_ort_onnx"]
    """
    from ..deploy.export import export_onnx

    model, qmodel, calib, heldout = _load(config)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    with _val_subset(config, config.val_images) as split:
        run = _Run(config, heldout, split, calib)
        if not set(calib).isdisjoint(heldout):
            run.notes.append("calibration split too small: parity images overlap calibration")
        export_onnx(
            model, out / "fp32.onnx", img_size=config.img_size, opset=13, dynamic_batch=True,
            uint8_input=config.uint8_input,
        )  # fmt: skip
        run.files["fp32_onnx"] = str(out / "fp32.onnx")
        _measure(run, "fp32", out / "fp32.onnx")
        calibration = _calibrate(run, qmodel, calib)
        float_layers, greedy = _ptq_rows(run, qmodel)
        _save_int8(run, qmodel, float_layers, calibration)
        qat = None
        if config.qat is not None:
            from .qat_run import run_qat_stage

            qat = run_qat_stage(run, model, qmodel, float_layers, calibration)
    _finish_rows(run)
    run.files.update(report_md=str(out / f"{REPORT_STEM}.md"), report_json=str(out / f"{REPORT_STEM}.json"))
    result = PTQResult(
        config, run.rows, float_layers, greedy, run.parity, calibration, run.files, run.notes, qat, run.float_costs
    )
    if config.max_ap_drop is not None and result.ap_drop > config.max_ap_drop:
        result.notes.append(
            f"max AP drop {config.max_ap_drop} not met on ONNX Runtime even with {len(float_layers)} float"
        )
    write_report(result.to_dict(), out)
    return result
