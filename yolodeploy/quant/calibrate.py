"""Post-training calibration of a quantized model, with a manifest-keyed cache (issue 6 item 2).

Calibration data are images of a dedicated split (``<root>/images/calib``) or any image folder, prepared with
exactly the inference pre-processing of every runner and of ``evaluation_run`` (``letterbox`` with gray 114 and
``scaleup=True``, RGB, /255, float32 NCHW), never training augmentation. :func:`calibrate` runs the float model
once over them with every input quantizer recording a histogram, then sets each activation amax with the chosen
calibrator (max / percentile / entropy / mse); weights always get their per-channel max.

A :class:`CalibrationManifest` records everything the amax values depend on (the images and their sha256, the
image size and pre-processing, the model's weights hash and quantized layers, the method and its settings, the
yolodeploy version). :func:`calibrate_cached` stores the amax values in ``<cache_dir>/<manifest sha256>.json``
and reuses them only when a later manifest is identical: any changed byte, image, size, method or weight gives
another key, so a stale cache is never read.

Example:
    >>> qmodel = quantize_model(create_model("yolov6n"))
    >>> images = calibration_images("data/", count=512)
    >>> result = calibrate_cached(qmodel, images, "calib_cache", img_size=640, method="entropy")
    >>> result.cached, len(result.amax)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import __version__
from ..core.preprocess import letterbox, list_images, load_image, to_tensor_batch
from ..errors import CalibrationError, ConfigError, ImageError
from ..utils.io import atomic_write_text, file_sha256
from .calibrators import CalibMethod
from .model import enable_all, quant_layers
from .quantizer import QuantState, TensorQuantizer

__all__ = [
    "PREPROCESSING",
    "MIN_RECOMMENDED_IMAGES",
    "CalibrationManifest",
    "CalibrationResult",
    "calibration_images",
    "calibration_batches",
    "calibrate",
    "apply_amax",
    "quantizer_key",
    "activation_quantizers",
    "unsigned_keys",
    "model_hash",
    "file_sha256",
    "calibrate_cached",
]

logger = logging.getLogger(__name__)

#: The pre-processing recorded in manifests (what ``calibration_batches`` does; same as inference).
#: How activation quantizers are chosen and ranged (recorded in manifests: a cache of another scheme is stale).
ACTIVATION_SCHEME = "per-tensor; unsigned 0..255 where calibration saw no negative value; conv outputs not before ReLU"

PREPROCESSING = "letterbox(color=114, scaleup=True, centred) -> RGB -> /255 -> float32 NCHW"
#: Fewer calibration images than this gives a warning (with the count).
MIN_RECOMMENDED_IMAGES = 32


def calibration_images(
    source: str | os.PathLike,
    *,
    split: str = "calib",
    count: int = 512,
    seed: int = 0,
    min_recommended: int = MIN_RECOMMENDED_IMAGES,
) -> list[Path]:
    """A deterministic subset of ``count`` calibration images (all of them if there are fewer).

    Args:
        source: a dataset root (its ``images/<split>`` folder is used) or a folder of images.
        split: the dataset split to use when ``source`` is a dataset root.
        count: how many images to draw (a seeded sample of the sorted list, returned sorted).
        seed: the sampling seed.
        min_recommended: warn when fewer images than this are returned (0: never, e.g. for a parity check).

    Raises:
        ConfigError: ``count < 1``. CalibrationError: no image found (the message names the folders tried).

    Example:
        >>> paths = calibration_images("data/", split="calib", count=512)
    """
    if count < 1:
        raise ConfigError(f"the calibration image count must be >= 1, got {count}")
    root = Path(source)
    folder = root / "images" / split
    tried = [folder, root] if folder.is_dir() else [root]
    paths: list[str] = []
    for candidate in tried:
        try:
            paths = list_images(candidate)
            break
        except ImageError:
            continue
    if not paths:
        raise CalibrationError(
            f"no calibration images in {' or '.join(str(p) for p in tried)}: pass a dataset root with "
            f"images/{split}/ or a folder of images"
        )
    if len(paths) > count:
        paths = sorted(random.Random(seed).sample(paths, count))
    if len(paths) < min_recommended:
        logger.warning("only %d calibration images (>= %d recommended)", len(paths), min_recommended)
    return [Path(p) for p in paths]


def _size_pair(img_size: int | Sequence[int]) -> tuple[int, int]:
    return (int(img_size), int(img_size)) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))


def calibration_batches(
    paths: Sequence[str | os.PathLike], img_size: int | Sequence[int], batch: int = 8, border: int = 0
) -> Iterator[Tensor]:
    """Float32 ``(B, 3, H, W)`` batches of ``paths`` with the inference pre-processing (:data:`PREPROCESSING`).

    Example:
        >>> for batch in calibration_batches(paths, 640):
        ...     qmodel(batch)
    """
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    size = _size_pair(img_size)
    for first in range(0, len(paths), batch):
        images = [letterbox(load_image(p), size, border=border, scaleup=True)[0] for p in paths[first : first + batch]]
        yield torch.from_numpy(to_tensor_batch(images))


def _method_kwargs(method: CalibMethod, percentile: float) -> dict[str, float]:
    return {"percentile": percentile} if method is CalibMethod.PERCENTILE else {}


def calibrate(
    qmodel: nn.Module,
    batches: Iterable[Tensor],
    method: CalibMethod | str = CalibMethod.ENTROPY,
    percentile: float = 99.99,
) -> dict[str, float]:
    """Calibrate every quantized layer of ``qmodel`` on ``batches`` and enable all quantizers.

    The model runs float (eval mode, no grad) while every activation quantizer (each layer's input, and its
    output where ``quantize_output``) records a histogram; each amax then comes from ``method``, and a
    quantizer that saw no negative value becomes unsigned. Weight amax is the per-channel max of the weights.

    Returns:
        The activation amax by quantizer key (:func:`quantizer_key`: the layer name for its input quantizer,
        ``"<layer>:output"`` for its output quantizer). :func:`unsigned_keys` lists the unsigned ones.

    Raises:
        CalibrationError: no quantized layer, or no batch. ConfigError: an unknown method, NaN activations.

    Example:
        >>> amax = calibrate(qmodel, calibration_batches(paths, 640), method="percentile", percentile=99.99)
    """
    method = CalibMethod.parse(method)
    layers = quant_layers(qmodel)
    if not layers:
        raise CalibrationError("the model has no quantized layer: call quantize_model first")
    was_training = qmodel.training
    qmodel.eval()
    for layer in layers.values():
        layer.disable()
        for quantizer in layer.quantizers().values():
            quantizer.start_calibration()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                qmodel(batch)
                seen += int(batch.shape[0])
    finally:
        qmodel.train(was_training)
    if seen == 0:
        for layer in layers.values():
            for quantizer in layer.quantizers().values():
                quantizer.state = QuantState.DISABLED
        raise CalibrationError("no calibration batch: the image list is empty")
    amax = {}
    for key, quantizer in activation_quantizers(qmodel).items():
        amax[key] = float(quantizer.stop_calibration(method, **_method_kwargs(method, percentile)))
    for layer in layers.values():
        layer.weight_quantizer.calibrate_weight_(layer.conv.weight)
    enable_all(qmodel)
    return amax


def quantizer_key(layer: str, role: str) -> str:
    """The key of a layer's activation quantizer in amax dicts: ``layer`` (input) or ``layer:output``."""
    return layer if role == "input" else f"{layer}:{role}"


def activation_quantizers(qmodel: nn.Module) -> dict[str, TensorQuantizer]:
    """Every activation quantizer calibration sets, by :func:`quantizer_key`, in module order."""
    return {
        quantizer_key(name, role): quantizer
        for name, layer in quant_layers(qmodel).items()
        for role, quantizer in layer.quantizers().items()
    }


def unsigned_keys(qmodel: nn.Module) -> list[str]:
    """Keys of the unsigned (uint8) activation quantizers."""
    return [key for key, quantizer in activation_quantizers(qmodel).items() if quantizer.is_unsigned]


def apply_amax(qmodel: nn.Module, amax: dict[str, float], unsigned: Iterable[str] = ()) -> None:
    """Set every activation amax (and the unsigned flags) from a calibration; weights: per-channel max; enable.

    Raises:
        CalibrationError: ``amax`` does not name exactly the model's activation quantizers.
    """
    quantizers, unsigned = activation_quantizers(qmodel), set(unsigned)
    if set(amax) != set(quantizers) or not unsigned <= set(quantizers):
        raise CalibrationError("the amax values do not fit this model's quantized layers")
    for key, quantizer in quantizers.items():
        quantizer.set_unsigned_(key in unsigned)
        quantizer.set_amax_(amax[key])
    for layer in quant_layers(qmodel).values():
        layer.weight_quantizer.calibrate_weight_(layer.conv.weight)
    enable_all(qmodel)


# -- manifest and cache ----------------------------------------------------------------------------------------


def model_hash(model: nn.Module) -> str:
    """sha256 of the deploy-form state (keys, dtypes, shapes and bytes in key order).

    Quantizer buffers are left out and a ``QuantConv2d``'s ``<name>.conv.weight`` counts as ``<name>.weight``,
    so the hash is the same for the deploy model and for any quantization of it (exclusions included).
    """
    digest = hashlib.sha256()
    wrapped = tuple(f"{name}.conv." for name in quant_layers(model))
    for key, tensor in model.state_dict().items():
        if key.endswith(("_quantizer.amax", "_quantizer.unsigned")):  # quantizer state, not the model
            continue
        prefix = next((p for p in wrapped if key.startswith(p)), None)
        key = prefix[: -len("conv.")] + key[len(prefix) :] if prefix else key
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class CalibrationManifest:
    """Everything a calibration result depends on; two equal manifests give the same amax values."""

    images: tuple[tuple[str, str], ...]  # (file name, sha256)
    img_size: tuple[int, int]
    batch: int
    method: str
    settings: dict[str, Any]
    model_hash: str
    quant_layers: tuple[str, ...]
    preprocessing: str = PREPROCESSING
    yolodeploy_version: str = __version__

    @property
    def count(self) -> int:
        return len(self.images)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(images=[list(i) for i in self.images], img_size=list(self.img_size), count=self.count)
        data["quant_layers"] = list(self.quant_layers)
        return data

    def sha256(self) -> str:
        """The cache key: sha256 of the canonical JSON of :meth:`to_dict`."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def build(
        cls, qmodel: nn.Module, images: Sequence[str | os.PathLike], *, img_size, batch, method, percentile
    ) -> CalibrationManifest:
        """The manifest of calibrating ``qmodel`` on ``images`` with these settings (hashes every image)."""
        method = CalibMethod.parse(method)
        return cls(
            images=tuple((Path(p).name, file_sha256(p)) for p in images),
            img_size=_size_pair(img_size),
            batch=int(batch),
            method=method.value,
            settings={
                "num_bits": 8,
                "num_bins": 2048,
                "activations": ACTIVATION_SCHEME,
                **_method_kwargs(method, percentile),
            },
            model_hash=model_hash(qmodel),
            quant_layers=tuple(activation_quantizers(qmodel)),
        )


@dataclasses.dataclass
class CalibrationResult:
    """What :func:`calibrate_cached` did: the amax values, their manifest, the cache file, and whether reused."""

    amax: dict[str, float]
    manifest: CalibrationManifest
    cache_path: Path
    cached: bool
    note: str
    unsigned: list[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        return f"calibration {self.manifest.method} on {self.manifest.count} images: {self.note} ({self.cache_path})"


def _read_cache(path: Path, manifest: CalibrationManifest) -> tuple[dict[str, float] | None, list[str], str]:
    """``(amax, unsigned keys, note)``; amax is None when the cache is missing, unreadable or stale."""
    if not path.exists():
        return None, [], "calibrated (no cached calibration for this manifest)"
    try:
        data = json.loads(path.read_text())
        amax = {str(k): float(v) for k, v in data["amax"].items()}
        unsigned = [str(k) for k in data["unsigned"]]
        same = data["manifest"] == json.loads(json.dumps(manifest.to_dict()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, [], "recalibrated (the cached file was unreadable)"
    if not same or set(amax) != set(manifest.quant_layers) or not set(unsigned) <= set(amax):
        return None, [], "recalibrated (the cached file's manifest did not match)"
    return amax, unsigned, "reused the cached calibration"


def calibrate_cached(
    qmodel: nn.Module,
    images: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike,
    *,
    img_size: int | Sequence[int],
    batch: int = 8,
    method: CalibMethod | str = CalibMethod.ENTROPY,
    percentile: float = 99.99,
) -> CalibrationResult:
    """:func:`calibrate` unless ``cache_dir`` holds the amax values of an identical manifest (then reuse them).

    The cache file ``<cache_dir>/<manifest sha256>.json`` holds the manifest and the amax values, written
    atomically. Either way the model ends calibrated and enabled.

    Example:
        >>> result = calibrate_cached(qmodel, calibration_images("data/"), "cache", img_size=640)
        >>> print(result)  # "... reused the cached calibration ..." on the second run
    """
    if not images:
        raise CalibrationError("no calibration images: pass at least one (see calibration_images)")
    manifest = CalibrationManifest.build(
        qmodel, images, img_size=img_size, batch=batch, method=method, percentile=percentile
    )
    path = Path(cache_dir) / f"{manifest.sha256()}.json"
    amax, unsigned, note = _read_cache(path, manifest)
    if amax is not None:
        apply_amax(qmodel, amax, unsigned)
        return CalibrationResult(amax, manifest, path, True, note, unsigned)
    amax = calibrate(qmodel, calibration_batches(images, img_size, batch), method=method, percentile=percentile)
    unsigned = unsigned_keys(qmodel)
    record = {"manifest": manifest.to_dict(), "amax": amax, "unsigned": unsigned}
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True))
    return CalibrationResult(amax, manifest, path, False, note, unsigned)
