"""The benchmark harness: latency and throughput of one model on one backend, per batch size, as a JSON value.

``run_benchmark(BenchConfig(...))`` opens a :class:`~yolodeploy.deploy.runners.Runner` for the model, feeds it a
fixed random batch of each size (warm-up first, then a fixed number of iterations or a time budget) and returns a
:class:`BenchResult`: the environment, the full config, per batch size the latency mean/p50/p90/p99/min and the
throughput (images/s = batch size / mean latency), and the reference workload (:mod:`.reference`) timed before
and after, for normalized comparisons. With ``e2e=True`` a second loop runs the whole pipeline on real image
files and times its stages separately: pre-processing (decode + letterbox + batching), inference, and
post-processing (NMS unless the model has it built in, then boxes mapped back to each image).

Timing is done here, not in the runners (STYLE 9): ``time.perf_counter`` around each call on the CPU; on a CUDA
device, a pair of ``torch.cuda.Event(enable_timing=True)`` recorded around the call and synchronized after it,
so that every sample is exactly one call's device time and no asynchronous work leaks into the next sample.

Example:
    >>> from yolodeploy.bench.harness import BenchConfig, run_benchmark
    >>> result = run_benchmark(BenchConfig(model="yolov6n", backend="ort", batch_sizes=(1, 2), img_size=320))
    >>> result.batches[0].throughput_ips
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..core.preprocess import image_batch, image_hw, random_image_batch, square_side
from ..deploy.runners import ENGINE_SUFFIXES, ONNX_SUFFIXES, OPENVINO_SUFFIXES, Backend, detect_backend
from ..errors import BenchmarkResultError, ConfigError
from ..utils.io import atomic_write_text
from ..utils.threads import torch_threads
from .compare import RESULT_FORMAT
from .env import capture_environment
from .latency import LatencyStats
from .reference import REFERENCE_SPEC, make_reference_workload

__all__ = [
    "Precision",
    "BenchConfig",
    "BatchResult",
    "BenchResult",
    "ProgressCallback",
    "run_benchmark",
    "load_deploy_model",
    "default_progress",
    "RESULT_FORMAT",
]

DEFAULT_ITERS = 20
ProgressCallback = Callable[[str, int, "int | None"], None]
"""``progress(label, done, total)``: called after each timed iteration (``total`` is None for a time budget)."""


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"


def _enum(kind: type[enum.Enum], value: Any, option: str) -> Any:
    try:
        return kind(value.value if isinstance(value, enum.Enum) else str(value).lower())
    except ValueError:
        choices = ", ".join(item.value for item in kind)
        raise ConfigError(f"{option} must be one of {choices}, got {value!r}") from None


@dataclasses.dataclass(kw_only=True)
class BenchConfig:
    """What to benchmark and how; round-trips through JSON (``to_dict``/``from_dict``) with a version.

    Attributes:
        model: a registry name (``yolov6n``), a checkpoint, an ``.onnx`` file, a TensorRT ``.engine`` or an
            OpenVINO IR ``.xml``.
        backend: ``torch``, ``ort`` (ONNX Runtime), ``trt`` (TensorRT), ``openvino`` or ``auto`` (from the model's
            suffix; ``.onnx`` -> ``ort``).
        batch_sizes: one benchmark per batch size, in this order.
        img_size: square input size; None = the model's own (static ONNX/engine dims, or its ``input_size``).
        warmup: untimed calls before each timed loop.
        iters / seconds: a fixed number of timed calls, or a time budget per batch size (at least one call).
            Not both; neither = 20 iterations.
        threads: intra-op threads (torch's, ONNX Runtime's, OpenVINO's); None = the library default.
        e2e / images: also time pre-processing, inference and post-processing on the image files of ``images``.
        device: ``cpu`` or ``cuda[:N]`` (torch and ONNX Runtime; TensorRT is always CUDA).
        precision: ``fp32`` or ``fp16`` (fp16: torch half, or an fp16 ONNX export for ``ort``/``openvino``;
            OpenVINO computes float layers at this precision: its ``f32`` / ``f16`` inference hint).
        name: label of the model in reports; None = the registry name or the file's stem.
        reference: time the reference workload in the same run (needed by ``bench-compare --normalize``).
        conf, iou, topk: post-processing (NMS) settings of the end-to-end loop.
    """

    version: ClassVar[int] = 1

    model: str
    backend: Backend | str = Backend.TORCH
    batch_sizes: tuple[int, ...] = (1,)
    img_size: int | None = None
    warmup: int = 3
    iters: int | None = None
    seconds: float | None = None
    threads: int | None = None
    e2e: bool = False
    images: str | None = None
    device: str = "cpu"
    precision: Precision | str = Precision.FP32
    name: str | None = None
    reference: bool = True
    conf: float = 0.25
    iou: float = 0.45
    topk: int = 100

    def __post_init__(self) -> None:
        self.model = str(self.model)
        self.backend = _resolve_backend(self.backend, self.model)
        self.precision = _enum(Precision, self.precision, "precision")
        self.batch_sizes = tuple(int(bs) for bs in self.batch_sizes)
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch sizes must be positive integers, got {list(self.batch_sizes)}")
        if self.iters is not None and self.seconds is not None:
            raise ConfigError("give either a number of iterations or a time budget in seconds, not both")
        if self.iters is None and self.seconds is None:
            self.iters = DEFAULT_ITERS
        self._check_numbers()
        if self.e2e and not self.images:
            raise ConfigError("the end-to-end benchmark needs real images: pass --images DIR (JPEG/PNG files)")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be cpu or cuda[:N], got {self.device!r}")
        if self.name is None:
            self.name = _default_name(self.model)

    def _check_numbers(self) -> None:
        checks = [
            ("iterations", self.iters, self.iters is None or self.iters >= 1, ">= 1"),
            ("seconds", self.seconds, self.seconds is None or self.seconds > 0, "> 0"),
            ("warm-up", self.warmup, self.warmup >= 0, ">= 0"),
            ("threads", self.threads, self.threads is None or self.threads >= 1, ">= 1"),
            ("image size", self.img_size, self.img_size is None or self.img_size >= 32, ">= 32"),
            ("topk", self.topk, self.topk >= 1, ">= 1"),
        ]
        for what, value, ok, rule in checks:
            if not ok:
                raise ConfigError(f"invalid {what} {value!r} for the benchmark: it must be {rule}")

    def to_dict(self) -> dict[str, Any]:
        data = {"version": self.version, **dataclasses.asdict(self)}
        data.update(backend=self.backend.value, precision=self.precision.value, batch_sizes=list(self.batch_sizes))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        data = dict(data)
        version = data.pop("version", cls.version)
        if version != cls.version:
            raise ConfigError(f"benchmark config version {version} is not supported (this is version {cls.version})")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown benchmark config fields {sorted(unknown)}")
        return cls(**data)


def _resolve_backend(backend: Backend | str, model: str) -> Backend:
    """``auto``: .onnx -> ort, .engine/.plan -> trt, anything else (checkpoint, registry name) -> torch."""
    if str(getattr(backend, "value", backend)).lower() != "auto":
        return Backend.parse(backend)
    suffix = Path(model).suffix.lower()
    return detect_backend(Path(model)) if suffix in _FILE_BACKENDS else Backend.TORCH


def _default_name(model: str) -> str:
    path = Path(model)
    return path.stem if path.suffix else model


@dataclasses.dataclass
class BatchResult:
    """One batch size: inference latency and throughput, and the end-to-end stages when measured."""

    batch_size: int
    latency: LatencyStats
    throughput_ips: float
    stages: dict[str, LatencyStats] | None = None
    e2e_throughput_ips: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "batch_size": self.batch_size,
            "latency": self.latency.to_dict(),
            "throughput_ips": self.throughput_ips,
        }
        if self.stages is not None:
            data["stages"] = {name: stats.to_dict() for name, stats in self.stages.items()}
            data["e2e_throughput_ips"] = self.e2e_throughput_ips
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchResult:
        stages = data.get("stages")
        return cls(
            batch_size=int(data["batch_size"]),
            latency=LatencyStats(**data["latency"]),
            throughput_ips=float(data["throughput_ips"]),
            stages={name: LatencyStats(**stats) for name, stats in stages.items()} if stages else None,
            e2e_throughput_ips=data.get("e2e_throughput_ips"),
        )


@dataclasses.dataclass
class BenchResult:
    """Everything one ``run_benchmark`` call measured, and where; ``to_dict()`` is the JSON file's content."""

    version: ClassVar[int] = 1

    name: str
    config: dict[str, Any]
    environment: dict[str, Any]
    model: dict[str, Any]
    batches: list[BatchResult]
    reference: dict[str, Any] | None
    created: str
    wall_seconds: float

    def batch(self, batch_size: int) -> BatchResult:
        for result in self.batches:
            if result.batch_size == batch_size:
                return result
        raise KeyError(batch_size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "version": self.version,
            "name": self.name,
            "created": self.created,
            "wall_seconds": self.wall_seconds,
            "config": self.config,
            "environment": self.environment,
            "model": self.model,
            "reference": self.reference,
            "batches": [batch.to_dict() for batch in self.batches],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        if data.get("format") != RESULT_FORMAT:
            raise BenchmarkResultError(f"not a yolodeploy benchmark result (format {data.get('format')!r})")
        try:
            return cls(
                name=data["name"],
                config=data["config"],
                environment=data["environment"],
                model=data["model"],
                batches=[BatchResult.from_dict(b) for b in data["batches"]],
                reference=data.get("reference"),
                created=data["created"],
                wall_seconds=float(data["wall_seconds"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchmarkResultError(f"benchmark result is incomplete or malformed ({exc!r})") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON atomically (no half-written file on error)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)

    def table(self) -> str:
        """A plain-text table of the figures (what ``yolodeploy bench`` prints)."""
        return "\n".join(format_table(self))


def format_table(result: BenchResult) -> list[str]:
    e2e = any(b.stages for b in result.batches)
    head = f"{'bs':>4}{'mean ms':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'min ms':>10}{'img/s':>10}"
    head += f"{'pre ms':>10}{'infer ms':>10}{'post ms':>10}{'e2e img/s':>11}" if e2e else ""
    model = result.model
    lines = [
        f"{result.name} | {result.config['backend']} on {model.get('device', '?')} | "
        f"{model.get('input_dtype', '?')} {model.get('img_size', '?')}x{model.get('img_size', '?')} | "
        f"threads {model.get('threads', '?')} | {result.environment.get('cpu', '?')}",
        head,
    ]
    for b in result.batches:
        s = b.latency
        row = f"{b.batch_size:>4}{s.mean_ms:>10.2f}{s.p50_ms:>10.2f}{s.p90_ms:>10.2f}{s.p99_ms:>10.2f}{s.min_ms:>10.2f}"
        row += f"{b.throughput_ips:>10.1f}"
        if b.stages:
            pre, inf, post = (b.stages[k].p50_ms for k in ("preprocess", "inference", "postprocess"))
            row += f"{pre:>10.2f}{inf:>10.2f}{post:>10.2f}{b.e2e_throughput_ips:>11.1f}"
        lines.append(row)
    if result.reference:
        lines.append(f"reference workload ({result.reference['name']}): {result.reference['ms']:.2f} ms (p50)")
    return lines


# --------------------------------------------------------------------------------------------------- timing


class Stopwatch:
    """Times one call: ``perf_counter`` on the CPU; CUDA events + synchronize on a CUDA device."""

    def __init__(self, cuda: bool = False) -> None:
        self.cuda = cuda
        if cuda:
            import torch

            self._torch = torch
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        """Run ``fn()`` once; return (seconds, its result)."""
        if not self.cuda:
            start = time.perf_counter()
            out = fn()
            return time.perf_counter() - start, out
        torch = self._torch
        start_event = torch.cuda.Event(enable_timing=True)
        end_event = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()  # nothing queued earlier may run inside this sample
        start_event.record()
        out = fn()
        end_event.record()
        end_event.synchronize()
        return start_event.elapsed_time(end_event) / 1e3, out


def _repeat(
    step: Callable[[], dict[str, float]],
    config: BenchConfig,
    label: str,
    progress: ProgressCallback | None,
) -> dict[str, list[float]]:
    """Call ``step`` (one iteration, returning per-stage seconds) ``warmup`` times untimed, then for
    ``config.iters`` iterations or until ``config.seconds`` have passed; collect the stage times."""
    for _ in range(config.warmup):
        step()
    times: dict[str, list[float]] = {}
    total = config.iters if config.seconds is None else None
    started = time.perf_counter()
    done = 0
    while True:
        for stage, seconds in step().items():
            times.setdefault(stage, []).append(seconds)
        done += 1
        if progress:
            progress(label, done, total)
        if config.seconds is None and done >= config.iters:
            break
        if config.seconds is not None and time.perf_counter() - started >= config.seconds:
            break
    return times


def _measure_reference(config: BenchConfig, stopwatch: Stopwatch, device: str) -> list[float]:
    workload = make_reference_workload(device)
    iters = max(10, min(30, config.iters or 30))
    ref_config = dataclasses.replace(config, iters=iters, seconds=None, warmup=max(2, config.warmup))
    return _repeat(lambda: {"reference": stopwatch(workload)[0]}, ref_config, "reference", None)["reference"]


def _reference_summary(before: list[float], after: list[float]) -> dict[str, Any]:
    both = LatencyStats.from_times(before + after)
    return {
        "name": REFERENCE_SPEC["name"],
        "spec": REFERENCE_SPEC,
        "ms": both.p50_ms,
        "stats": both.to_dict(),
        "before_p50_ms": LatencyStats.from_times(before).p50_ms,
        "after_p50_ms": LatencyStats.from_times(after).p50_ms,
    }


# --------------------------------------------------------------------------------------------------- runs


def run_benchmark(
    config: BenchConfig,
    progress: ProgressCallback | None = None,
    *,
    runner: Any = None,
) -> BenchResult:
    """Benchmark ``config.model`` on ``config.backend`` at each batch size; see the module docstring.

    Args:
        config: what to measure.
        progress: optional callback ``progress(label, done, total)`` (see :func:`default_progress`).
        runner: an already built Runner to time instead of building one from ``config.model`` (the config then
            only labels it).

    Raises:
        ConfigError: an invalid combination (e.g. an ``.onnx`` file with ``backend="torch"``, a batch size the
            model's static shape does not allow).
        BackendUnavailableError, UnknownModelError, CheckpointError: from building the runner.
    """
    started, created = time.perf_counter(), datetime.datetime.now(datetime.timezone.utc).isoformat()
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch_threads(config.threads))
        if runner is None:
            runner, model_info = _open_runner(config, stack)
        else:
            model_info = {"source": "runner", "runner": type(runner).__name__}
        if not getattr(runner, "is_active", False):
            stack.enter_context(runner)
        input_name, dtype, img_size = _input_spec(runner, config, model_info.get("input_size"))
        cuda = str(runner.device).startswith("cuda")
        stopwatch = Stopwatch(cuda)
        # the reference workload is PyTorch: on the runner's device when torch has it (cpu, cuda), else the CPU
        host = runner.device if str(runner.device).startswith(("cpu", "cuda")) else "cpu"
        reference_before = _measure_reference(config, stopwatch, host) if config.reference else None
        batches = []
        for batch_size in config.batch_sizes:
            feed = {input_name: random_image_batch(batch_size, img_size, dtype)}
            batches.append(_bench_batch(runner, feed, config, stopwatch, progress))
        reference_after = _measure_reference(config, stopwatch, host) if config.reference else None
        model_info.update(_runtime_info(runner, input_name, dtype, img_size, config))
    reference = _reference_summary(reference_before, reference_after) if config.reference else None
    return BenchResult(
        name=config.name,
        config=config.to_dict(),
        environment=capture_environment(),
        model=model_info,
        batches=batches,
        reference=reference,
        created=created,
        wall_seconds=time.perf_counter() - started,
    )


def _bench_batch(
    runner: Any, feed: dict[str, np.ndarray], config: BenchConfig, stopwatch: Stopwatch, progress
) -> BatchResult:
    batch_size = next(iter(feed.values())).shape[0]
    label = f"{config.name} {config.backend.value} bs{batch_size}"
    times = _repeat(lambda: {"latency": stopwatch(lambda: runner.infer(feed))[0]}, config, label, progress)
    latency = LatencyStats.from_times(times["latency"])
    result = BatchResult(batch_size, latency, batch_size * 1e3 / latency.mean_ms)
    if config.e2e:
        pipeline = _EndToEnd(runner, config, feed, stopwatch)
        stage_times = _repeat(pipeline.step, config, f"{label} e2e", progress)
        result.stages = {stage: LatencyStats.from_times(values) for stage, values in stage_times.items()}
        result.e2e_throughput_ips = batch_size * 1e3 / result.stages["total"].mean_ms
    return result


def _input_spec(runner: Any, config: BenchConfig, model_input_size: Any) -> tuple[str, np.dtype, int]:
    """The image input's name, dtype and (square) size, checked against the model's static dims."""
    metadata = runner.input_metadata()
    if len(metadata) != 1:
        raise ConfigError(f"the benchmark feeds one image input; this model has inputs {sorted(metadata)}")
    name, meta = next(iter(metadata.items()))
    shape = tuple(meta.shape)
    if len(shape) != 4:
        raise ConfigError(
            f"input {name!r} has shape {shape}; expected an image batch (B, 3, H, W), or (B, H, W, 3) for uint8"
        )
    static = [dim for dim in image_hw(shape, meta.dtype) if isinstance(dim, int)]
    if static and (len(static) != 2 or static[0] != static[1]):
        raise ConfigError(f"input {name!r} has shape {shape}; the benchmark uses square images")
    size = config.img_size or (static[0] if static else None) or square_side(model_input_size) or 640
    if static and static[0] != size:
        raise ConfigError(f"the model's input is fixed at {static[0]}x{static[0]}; --img {size} does not fit it")
    for batch_size in config.batch_sizes:
        if isinstance(shape[0], int) and shape[0] != batch_size:
            raise ConfigError(
                f"the model has a static batch of {shape[0]}; batch {batch_size} needs a dynamic-batch export "
                "(yolodeploy export --dynamic-batch) or an engine profile that covers it"
            )
    return name, np.dtype(meta.dtype), int(size)


def _runtime_info(runner: Any, input_name: str, dtype: np.dtype, img_size: int, config: BenchConfig) -> dict:
    import torch

    threads = config.threads
    if threads is None:
        threads = torch.get_num_threads() if config.backend is Backend.TORCH else "default"
    return {
        "runner": type(runner).__name__,
        "backend": getattr(runner, "backend", config.backend.value),
        "device": str(runner.device),
        "input_name": input_name,
        "input_dtype": str(dtype),
        "img_size": img_size,
        "threads": threads,
    }


# --------------------------------------------------------------------------------------------------- models

# Which backends run which model file: kind, accepted backends (the first is the one ``auto`` picks and errors suggest).
_FILE_BACKENDS = {
    **dict.fromkeys(ONNX_SUFFIXES, ("onnx", (Backend.ORT, Backend.OPENVINO))),
    **dict.fromkeys(ENGINE_SUFFIXES, ("engine", (Backend.TRT,))),
    **dict.fromkeys(OPENVINO_SUFFIXES, ("OpenVINO IR", (Backend.OPENVINO,))),
}
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")


def _open_runner(config: BenchConfig, stack: contextlib.ExitStack) -> tuple[Any, dict[str, Any]]:
    """Build the Runner ``config`` asks for; a registry name or checkpoint on ``ort`` is exported to a
    temporary dynamic-batch ONNX file first (removed when ``stack`` closes); so is one on ``openvino``."""
    from ..deploy.runners import create_runner

    path, backend = Path(config.model), config.backend
    suffix = path.suffix.lower()
    if suffix in _FILE_BACKENDS:
        kind, accepted = _FILE_BACKENDS[suffix]
        if not path.is_file():
            raise ConfigError(f"no such file: {path}")
        if backend not in accepted:
            raise ConfigError(f"{path.name} is an {kind} file: benchmark it with --backend {accepted[0].value}")
        return create_runner(path, backend.value, **_runner_options(config)), {"source": kind, "path": str(path)}
    if backend is Backend.TRT:
        raise ConfigError(
            "TensorRT runs engines: `yolodeploy export MODEL -o model.onnx --dynamic-batch`, then "
            "`yolodeploy build-engine model.onnx -o model.engine`, and benchmark model.engine"
        )
    model, info = load_deploy_model(config.model)
    if backend is Backend.TORCH:
        return create_runner(model, "torch", **_runner_options(config)), info
    from ..deploy.export import export_onnx

    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="yolodeploy-bench-")))
    img_size = config.img_size or square_side(getattr(model, "input_size", None)) or 640
    report = export_onnx(
        model,
        tmp / f"{_default_name(config.model)}.onnx",
        img_size=(img_size, img_size),
        dynamic_batch=True,
        half=config.precision is Precision.FP16,
        check=False,
    )
    info["onnx_export"] = {"opset": report.opset, "dynamic_batch": True, "img_size": img_size, "temporary": True}
    return create_runner(report.path, backend.value, **_runner_options(config)), info


def load_deploy_model(source: str) -> tuple[Any, dict[str, Any]]:
    """A checkpoint file or registry name as a deploy-form (re-parameterized) eval model."""
    import torch

    from ..core.reparam import reparameterize_model
    from ..models import create_model, load_checkpoint

    path = Path(source)
    if path.is_file():
        model, info = load_checkpoint(path), {"source": "checkpoint", "path": str(path)}
    elif path.suffix.lower() in _CHECKPOINT_SUFFIXES:
        raise ConfigError(f"no such file: {path}")
    else:
        torch.manual_seed(0)  # random weights: latency does not depend on their values
        model, info = create_model(source), {"source": "registry", "weights": "random (seed 0)"}
    model = reparameterize_model(model.eval(), inplace=True)
    info.update(arch=getattr(model, "arch", None), form="deploy", input_size=list(getattr(model, "input_size", ())))
    return model, info


def _runner_options(config: BenchConfig) -> dict[str, Any]:
    if config.backend is Backend.TORCH:
        return {"device": config.device, "half": config.precision is Precision.FP16}
    if config.backend is Backend.ORT:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if config.device.startswith("cuda") else None
        return {"threads": config.threads, "providers": providers}
    if config.backend is Backend.OPENVINO:
        if config.device != "cpu":
            raise ConfigError(f"--backend openvino runs on the CPU here; --device {config.device} is for torch/ort/trt")
        return {"threads": config.threads, "precision": "f16" if config.precision is Precision.FP16 else "f32"}
    return {}


class _EndToEnd:
    """One end-to-end iteration on real files: decode + letterbox + batch, inference, NMS + boxes mapped back."""

    def __init__(self, runner: Any, config: BenchConfig, feed: dict[str, np.ndarray], stopwatch: Stopwatch):
        from ..core.preprocess import list_images

        self.runner, self.config, self.stopwatch, self.cpu = runner, config, stopwatch, Stopwatch(False)
        self.paths = list_images(config.images)
        self.input_name, template = next(iter(feed.items()))
        self.batch_size = template.shape[0]
        self.height, self.width = image_hw(template.shape, template.dtype)
        self.dtype = template.dtype
        self.offset = 0

    def step(self) -> dict[str, float]:
        count = len(self.paths)
        paths = [self.paths[(self.offset + i) % count] for i in range(self.batch_size)]
        self.offset = (self.offset + self.batch_size) % count
        pre, (batch, metas) = self.cpu(lambda: self._preprocess(paths))
        infer, outputs = self.stopwatch(lambda: self.runner.infer({self.input_name: batch}))
        post, _ = self.cpu(lambda: self._postprocess(outputs, metas))
        return {"preprocess": pre, "inference": infer, "postprocess": post, "total": pre + infer + post}

    def _preprocess(self, paths: list[str]) -> tuple[np.ndarray, list[tuple]]:
        from ..core.preprocess import letterbox, load_image

        images, metas = [], []
        for path in paths:
            image = load_image(path)
            padded, ratio, pad = letterbox(image, (self.height, self.width))
            images.append(padded)
            metas.append((ratio, pad, image.shape[:2]))
        return image_batch(images, dtype=self.dtype), metas

    def _postprocess(self, outputs: dict[str, np.ndarray], metas: list[tuple]) -> list[np.ndarray]:
        from ..core.preprocess import scale_boxes_back

        if "num_dets" in outputs:  # NMS inside the model
            counts, boxes = outputs["num_dets"].reshape(-1), outputs["det_boxes"]
        else:
            import torch

            from ..core.nms import batched_nms

            raw = torch.from_numpy(np.asarray(outputs.get("outputs", next(iter(outputs.values()))), np.float32))
            counts, boxes, _, _ = batched_nms(
                raw[..., :4], raw[..., 4:], self.config.iou, self.config.conf, self.config.topk
            )
            counts, boxes = counts.reshape(-1).numpy(), boxes.numpy()
        return [
            scale_boxes_back(boxes[i, : int(counts[i])], ratio, pad, shape)
            for i, (ratio, pad, shape) in enumerate(metas)
        ]


# --------------------------------------------------------------------------------------------------- progress


def default_progress(stream: Any = None) -> ProgressCallback:
    """A progress callback: a tqdm bar per label when tqdm is installed, else one updating line on stderr."""
    stream = stream or sys.stderr
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    bars: dict[str, Any] = {}

    def progress(label: str, done: int, total: int | None) -> None:
        if tqdm is not None:
            bar = bars.get(label) or bars.setdefault(label, tqdm(total=total, desc=label, file=stream, leave=False))
            bar.update(done - bar.n)
            if total is not None and done >= total:
                bar.close()
            return
        end = "\n" if total is not None and done >= total else ""
        stream.write(f"\r{label}: {done}/{total if total is not None else '?'}{end}")
        stream.flush()

    return progress
