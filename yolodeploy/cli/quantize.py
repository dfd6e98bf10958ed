"""``yolodeploy quantize``: PTQ, partial PTQ and QAT with parity and AP checks (issue 6 items 4, 5, 7, 8).

``--ptq`` calibrates and exports INT8; ``--qat`` (which implies the PTQ calibration) then fine-tunes a copy of the
calibrated model distilled from the float one; one report compares FP32, PTQ, partial PTQ and QAT. The same in
Python::

    from yolodeploy.quant.ptq import PTQConfig, run_ptq
    from yolodeploy.quant.qat import QATConfig
    result = run_ptq(PTQConfig(model="best.safetensors", data="data/", output="runs/q", sensitive_topk=6,
                               bench_batch_sizes=(1, 32), qat=QATConfig(epochs=10, img_size=224, distill="cwd")))
    print(result.table()); print(result.files); result.record()  # what --json FILE writes
"""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..quant.qat import QATConfig

__all__ = ["COMMANDS"]

#: QAT options of the CLI -> QATConfig fields (None when not given: QATConfig's default applies).
_QAT_FIELDS = {"epochs": "epochs", "distill": "distill", "qat_lr": "lr", "qat_batch": "batch_size",
               "train_split": "train_split", "learn_amax": "learn_amax", "amax_lr": "amax_lr"}  # fmt: skip


@click.command("quantize")
@click.argument("model", metavar="MODEL")
@click.option("--data", required=True, type=click.Path(), help="Dataset root (images/<split>, annotations/).")
@click.option("--ptq", is_flag=True, help="Post-training quantization (calibrate, export INT8).")
@click.option("--qat", is_flag=True, help="Then quantization-aware training of the calibrated model (implies --ptq).")
@click.option("--sensitive-topk", default=0, show_default=True, help="Keep the K most sensitive layers float.")
@click.option("--metric", default="mse", show_default=True, help="Sensitivity metric: mse, snr, cosine or ap.")
@click.option("--max-ap-drop", type=float, default=None, help="Add float layers until AP drop <= D (AP in [0, 1]).")
@click.option("--cost-aware", is_flag=True, help="Pick the float layers by sensitivity per ms of ONNX Runtime "
              "latency each adds when float (timed on this machine), not by sensitivity alone.")  # fmt: skip
@click.option("--cost-candidates", default=20, show_default=True, help="--cost-aware: how many of the most "
              "sensitive layers are timed.")  # fmt: skip
@click.option("--cost-bs", "cost_batch", default=1, show_default=True, help="--cost-aware: batch size of the timing.")
@click.option("--method", default="percentile", show_default=True, help="Calibrator: max, percentile, entropy, mse.")
@click.option("--percentile", default=99.999, show_default=True, help="Percentile for --method percentile.")
@click.option("--calib-images", default=512, show_default=True, help="Calibration images (or the split size).")
@click.option("--heldout-images", default=8, show_default=True, help="Held-out calib images for parity/sensitivity.")
@click.option("--sensitivity-images", default=64, show_default=True,
              help="Images of the sensitivity ranking: the held-out ones, then calibration images.")  # fmt: skip
@click.option("--val-images", type=int, default=None, help="Val images for AP (seeded subset) [default: all].")
@click.option("--img", "img_size", default=224, show_default=True, help="Square letterbox size (multiple of 32).")
@click.option("--border", default=0, show_default=True, help="Gray letterbox frame in pixels (YOLOv6 §3.1).")
@click.option("--seed", default=0, show_default=True, help="Image sampling seed.")
@click.option("--bench", is_flag=True, help="Also measure the latency of every row's ONNX file (--bench-backend).")
@click.option("--bs", "batch_sizes", type=int, multiple=True, default=(1, 32), show_default=True, help="--bench sizes.")
@click.option("--iters", default=10, show_default=True, help="Timed calls per batch size for --bench.")
@click.option("--bench-backend", type=click.Choice(["ort", "openvino"]), default="ort", show_default=True,
              help="--bench runtime: ONNX Runtime or OpenVINO (CPU; the openvino extra).")  # fmt: skip
@click.option("--uint8-input", is_flag=True, help="The FP32 and ORT INT8 files take raw uint8 (B, H, W, 3) pixels "
              "(as `export --uint8-input`); AP and latency are measured on them.")  # fmt: skip
@click.option("--partial", "qat_partial", is_flag=True,
              help="QAT starts from the partial PTQ model (its --sensitive-topk/--max-ap-drop layers stay float) "
              "[default: every layer quantized].")  # fmt: skip
@click.option("--epochs", type=int, default=None, help="QAT epochs [default: 10].")
@click.option("--distill", default=None, help="QAT recipe: cwd (YOLOv6: det + KD + CWD), mse (label-free), none "
              "(det only) [default: cwd].")  # fmt: skip
@click.option("--qat-lr", type=float, default=None, help="QAT learning rate (cosine, no warm-up) [default: 1e-5].")
@click.option("--qat-batch", type=int, default=None, help="QAT images per step [default: 8].")
@click.option("--train-split", default=None, help="QAT training split [default: train].")
@click.option("--learn-amax", is_flag=True, default=None, help="QAT trains the quantization ranges too (LSQ, Adam "
              "on log amax) [default: ranges fixed at calibration].")  # fmt: skip
@click.option("--amax-lr", type=float, default=None, help="Adam lr of --learn-amax (cosine) [default: 1e-3].")
@click.option("--qat-val-images", type=int, default=None, help="Val images of the per-epoch fake-quant AP that "
              "picks the best QAT epoch; 0: keep the last epoch [default: the --val-images subset].")  # fmt: skip
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the record here: per model AP, AP50, latency_ms and command.")  # fmt: skip
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder.")
def quantize_command(model: str, data: str, ptq: bool, qat: bool, bench: bool, batch_sizes, json_path, **options):
    """Quantize MODEL to INT8 (--ptq) and fine-tune it (--qat), check Q/DQ ONNX parity, measure AP, report in OUTPUT.

    --qat runs the PTQ calibration first (QAT starts from the calibrated model), so the report has FP32, PTQ,
    partial PTQ (with --sensitive-topk/--max-ap-drop) and QAT side by side.
    """
    from ..errors import ConfigError
    from ..quant.ptq import PTQConfig, run_ptq
    from ..quant.report import write_record

    if not (ptq or qat):
        raise ConfigError("say what to do: --ptq (post-training quantization) and/or --qat (quantization-aware)")
    qat_config = _qat_config(qat, options)
    config = PTQConfig(
        model=model, data=data, bench_batch_sizes=batch_sizes if bench else (), bench_iters=options.pop("iters"),
        calib_images=options.pop("calib_images"), heldout_images=options.pop("heldout_images"),
        sensitivity_images=options.pop("sensitivity_images"), qat=qat_config,
        command=shlex.join(["yolodeploy", *sys.argv[1:]]), **options,
    )  # fmt: skip
    result = run_ptq(config)
    click.echo(result.table())
    for note in result.notes:
        click.echo(f"note: {note}")
    files = {**result.files, **({"record": str(write_record(result.to_dict(), json_path))} if json_path else {})}
    for role, path in files.items():
        click.echo(f"wrote {path} ({role})")


def _qat_config(qat: bool, options: dict[str, Any]) -> QATConfig | None:
    """The ``QATConfig`` of the given QAT options (popped from ``options``), or None without ``--qat``."""
    from ..errors import ConfigError
    from ..quant.qat import QATConfig

    given = {field: options.pop(name) for name, field in _QAT_FIELDS.items()}
    given = {field: value for field, value in given.items() if value is not None}
    if not qat:
        if given:
            flags = [f"--{name.replace('_', '-')}" for name, field in _QAT_FIELDS.items() if field in given]
            raise ConfigError(f"{', '.join(flags)}: QAT options, add --qat")
        return None
    return QATConfig(img_size=options["img_size"], seed=options["seed"], **given)


COMMANDS = [quantize_command]
