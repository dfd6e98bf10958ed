"""``yolodeploy quantize``: post-training (partial) quantization with parity and AP checks (issue 6 items 4, 7, 8).

The same in Python::

    from yolodeploy.quant.ptq import PTQConfig, run_ptq
    result = run_ptq(PTQConfig(model="best.safetensors", data="data/", output="runs/ptq", sensitive_topk=6,
                               bench_batch_sizes=(1, 32)))
    print(result.table()); print(result.files)
"""

from __future__ import annotations

import shlex
import sys

import click

__all__ = ["COMMANDS"]


@click.command("quantize")
@click.argument("model", metavar="MODEL")
@click.option("--data", required=True, type=click.Path(), help="Dataset root (images/<split>, annotations/).")
@click.option("--ptq", is_flag=True, help="Post-training quantization (required for now).")
@click.option("--qat", is_flag=True, help="Quantization-aware training (not wired to the CLI yet).")
@click.option("--sensitive-topk", default=0, show_default=True, help="Keep the K most sensitive layers float.")
@click.option("--metric", default="mse", show_default=True, help="Sensitivity metric: mse, snr, cosine or ap.")
@click.option("--max-ap-drop", type=float, default=None, help="Add float layers until AP drop <= D (AP in [0, 1]).")
@click.option("--method", default="entropy", show_default=True, help="Calibrator: max, percentile, entropy, mse.")
@click.option("--percentile", default=99.99, show_default=True, help="Percentile for --method percentile.")
@click.option("--calib-images", default=512, show_default=True, help="Calibration images (or the split size).")
@click.option("--heldout-images", default=8, show_default=True, help="Held-out calib images for parity/sensitivity.")
@click.option("--val-images", type=int, default=None, help="Val images for AP (seeded subset) [default: all].")
@click.option("--img", "img_size", default=224, show_default=True, help="Square letterbox size (multiple of 32).")
@click.option("--border", default=0, show_default=True, help="Gray letterbox frame in pixels (YOLOv6 §3.1).")
@click.option("--seed", default=0, show_default=True, help="Image sampling seed.")
@click.option("--bench", is_flag=True, help="Also measure ONNX Runtime latency of the FP32 and INT8 files.")
@click.option("--bs", "batch_sizes", type=int, multiple=True, default=(1, 32), show_default=True, help="--bench sizes.")
@click.option("--iters", default=10, show_default=True, help="Timed calls per batch size for --bench.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder.")
def quantize_command(model: str, data: str, ptq: bool, qat: bool, bench: bool, batch_sizes, **options) -> None:
    """Quantize MODEL to INT8 (--ptq), check Q/DQ ONNX parity, measure AP, write the report in OUTPUT."""
    from ..errors import ConfigError
    from ..quant.ptq import PTQConfig, run_ptq

    if qat:
        raise ConfigError("QAT from the CLI is not wired yet; use yolodeploy.quant.qat.run_qat")
    if not ptq:
        raise ConfigError("say what to do: --ptq (post-training quantization)")
    config = PTQConfig(
        model=model, data=data, bench_batch_sizes=batch_sizes if bench else (), bench_iters=options.pop("iters"),
        calib_images=options.pop("calib_images"), heldout_images=options.pop("heldout_images"),
        command=shlex.join(["yolodeploy", *sys.argv[1:]]), **options,
    )  # fmt: skip
    result = run_ptq(config)
    click.echo(result.table())
    for note in result.notes:
        click.echo(f"note: {note}")
    for role, path in result.files.items():
        click.echo(f"wrote {path} ({role})")


COMMANDS = [quantize_command]
