"""The peers our INT8 pipeline is compared with: ONNX Runtime's ``quantize_static`` and NNCF's default PTQ.

Both quantize the same FP32 ONNX file (``fp32.onnx`` written by ``yolodeploy quantize``) on the same calibration
images, fed through the exact inference pre-processing of our pipeline
(:func:`yolodeploy.quant.calibrate.calibration_batches`: letterbox, RGB, float32 NCHW in [0, 1]), one image per
sample. Each function returns the path it wrote and the seconds quantization took (model loading, calibration
and saving; the pre-processing of the images is included, as it is in our pipeline's calibration).

Usage (one peer on one file)::

    python benchmarks/quant_peers.py runs/quant_bench/ptq/fp32.onnx --data runs/synth --calib-images 250 \
        --peer nncf -o runs/quant_bench/peers/nncf.onnx

``benchmarks/quant_demo.py`` calls both on the demo model and compares them with our PTQ / partial PTQ / QAT.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from yolodeploy.deploy.export import INPUT_NAME
from yolodeploy.quant.calibrate import calibration_batches
from yolodeploy.utils.io import atomic_path

__all__ = ["PEERS", "ORT_SETTINGS", "NNCF_SETTINGS", "peer_samples", "ort_quantize_static", "nncf_ptq"]

#: The quantize_static options used, as recorded in the results (see :func:`ort_quantize_static`).
ORT_SETTINGS = (
    "quantize_static(quant_format=QDQ, per_channel=True, activation_type=QUInt8, weight_type=QInt8, "
    "calibrate_method=MinMax, everything else default)"
)
#: The NNCF call used (see :func:`nncf_ptq`).
NNCF_SETTINGS = "nncf.quantize(onnx_model, nncf.Dataset(samples)) with every default (preset PERFORMANCE, subset 300)"


def peer_samples(calib_paths: Sequence[str | os.PathLike], img_size: int) -> Iterator[dict[str, np.ndarray]]:
    """One ``{INPUT_NAME: float32 (1, 3, H, W)}`` feed per calibration image, in order (our pre-processing)."""
    for batch in calibration_batches(list(calib_paths), img_size, batch=1):
        yield {INPUT_NAME: batch.numpy()}


class _Reader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over :func:`peer_samples` (duck-typed)."""

    def __init__(self, calib_paths: Sequence[str | os.PathLike], img_size: int) -> None:
        self._samples = peer_samples(calib_paths, img_size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._samples, None)


def ort_quantize_static(
    fp32_onnx: str | os.PathLike, calib_paths: Sequence[str | os.PathLike], img_size: int, out_path: str | os.PathLike
) -> tuple[Path, float]:
    """ONNX Runtime's own static quantization, in the configuration a user following its docs for CNNs on x86 gets.

    ``quantize_static`` with:

    * ``quant_format=QuantFormat.QDQ``: ORT's recommended format (its default too);
    * ``per_channel=True``: per-output-channel weight scales, as ORT recommends for CNNs (and as our pipeline does;
      per-tensor weights lose accuracy on depthwise-free but BN-folded convs with very different channel ranges);
    * ``activation_type=QuantType.QUInt8``, ``weight_type=QuantType.QInt8`` (U8S8): ORT's default is S8S8, but
      on x86 ORT fuses only part of an S8S8 graph into QLinearConv and S8S8 ran 2x slower than U8S8 on this
      machine (``../shared/research/deps.md`` §5); ORT's own docs recommend U8S8 on x86-64 CPUs;
    * ``calibrate_method=CalibrationMethod.MinMax``: the default calibrator; everything else default
      (no ``quant_pre_process``: the optional shape-inference/optimization step fails on a dynamic-batch model
      without ``skip_symbolic_shape``, and ORT optimizes the graph at session creation anyway).

    Args:
        fp32_onnx: the FP32 model (dynamic batch, input :data:`INPUT_NAME`).
        calib_paths: the calibration images (the same our pipeline calibrated on).
        img_size: square letterbox size.
        out_path: where to write the QDQ model.

    Returns:
        ``(out_path, seconds)``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    start = time.perf_counter()
    with atomic_path(out_path) as tmp:
        quantize_static(
            str(fp32_onnx), str(tmp), _Reader(calib_paths, img_size), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip
    return Path(out_path), time.perf_counter() - start


def nncf_ptq(
    fp32_onnx: str | os.PathLike, calib_paths: Sequence[str | os.PathLike], img_size: int, out_path: str | os.PathLike
) -> tuple[Path, float]:
    """NNCF's default post-training quantization of the ONNX model: ``nncf.quantize(model, nncf.Dataset(...))``.

    Every NNCF default is kept (preset PERFORMANCE: symmetric INT8 weights per channel, uint8/int8 activations
    chosen per tensor by NNCF, min/max statistics on up to 300 samples, fast bias correction). The samples are one
    image each, as NNCF recommends (its statistics reduce over the batch axis). ``nncf`` is imported here only.

    Args:
        fp32_onnx: the FP32 model.
        calib_paths: the calibration images (the same our pipeline calibrated on).
        img_size: square letterbox size.
        out_path: where to write the QDQ model.

    Returns:
        ``(out_path, seconds)``.
    """
    import nncf
    import onnx

    start = time.perf_counter()
    quantized = nncf.quantize(onnx.load(str(fp32_onnx)), nncf.Dataset(list(peer_samples(calib_paths, img_size))))
    with atomic_path(out_path) as tmp:
        onnx.save(quantized, str(tmp))
    return Path(out_path), time.perf_counter() - start


PEERS: dict[str, Any] = {"ort_quantize_static": ort_quantize_static, "nncf": nncf_ptq}


def main(argv: list[str] | None = None) -> int:
    """Quantize one FP32 ONNX file with one peer on our pipeline's calibration images."""
    from yolodeploy.quant.sensitivity import SensitivityConfig, sensitivity_images

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32_onnx")
    parser.add_argument("--data", required=True, help="dataset root (images/calib)")
    parser.add_argument("--peer", choices=sorted(PEERS), required=True)
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--calib-images", type=int, default=512, help="as yolodeploy quantize --calib-images")
    parser.add_argument("--heldout-images", type=int, default=8, help="as yolodeploy quantize --heldout-images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--uint8-input",
        action="store_true",
        help="then make the quantized file take uint8 pixels (as `yolodeploy export --uint8-input`)",
    )
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    config = SensitivityConfig(images=args.heldout_images, calib_images=args.calib_images, seed=args.seed)
    calib, _ = sensitivity_images(args.data, split="calib", config=config)
    path, seconds = PEERS[args.peer](args.fp32_onnx, calib, args.img, args.output)
    info = {"path": str(path), "seconds": round(seconds, 2), "calib_images": len(calib)}
    if args.uint8_input:
        info["uint8_input"] = to_pixel_input(path, args.img)
    print(json.dumps(info))
    return 0


def to_pixel_input(path: str | os.PathLike, img_size: int) -> list[str]:
    """Rewrite the quantized file at ``path`` to take uint8 pixels, checked identical (after the timed part: our
    pipeline's conversion is not in its quantize time either); returns the check lines."""
    import onnx

    from yolodeploy.deploy.image_input import to_uint8_input

    model, lines = to_uint8_input(onnx.load(str(path)), img_size, batch=1)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
