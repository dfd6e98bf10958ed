"""``yolodeploy sensitivity``: per-layer quantization sensitivity (YOLOv6 paper §2.5.2, issue 6 item 3).

The same in Python::

    config = SensitivityConfig(metrics=("mse",), mode="one-on", images=64)
    calib, heldout = sensitivity_images("data/", split="calib", config=config)
    report = analyze_sensitivity(load_model_source("best.safetensors"), calibration_batches(calib, 224),
                                 heldout=calibration_batches(heldout, 224), config=config)
    print(report.table(k=10)); report.save_json("sens.json"); plot_sensitivity(report, "sens.png")
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from ..errors import DatasetError

__all__ = ["COMMANDS"]

_METRICS = ("mse", "snr", "cosine", "ap", "all")


@click.command("sensitivity")
@click.argument("model", metavar="MODEL")
@click.option("--data", required=True, type=click.Path(), help="Dataset root (images/<split>, annotations/).")
@click.option("--metric", default="mse", show_default=True, help=f"One of {', '.join(_METRICS)} (comma list ok).")
@click.option(
    "--mode", default="one-on", show_default=True, help="one-on: only the layer quantized; one-off: all but it."
)
@click.option(
    "--calib-split", default="calib", show_default=True, help="Split that gives calibration and held-out images."
)
@click.option("--images", default=64, show_default=True, help="Held-out calibration images for MSE/SNR/cosine.")
@click.option("--calib-images", default=512, show_default=True, help="Calibration images (the rest of the split).")
@click.option("--ap-images", default=100, show_default=True, help="Val images for direct AP.")
@click.option("--ap-top", default=10, show_default=True, help="Direct AP only for the top-N layers by MSE (0: all).")
@click.option("--method", default="percentile", show_default=True, help="Calibrator: max, percentile, entropy, mse.")
@click.option("--img", "img_size", default=224, show_default=True, help="Square letterbox size (multiple of 32).")
@click.option("--seed", default=0, show_default=True, help="Image sampling seed.")
@click.option("--top", default=10, show_default=True, help="Rows of the printed table (0: all).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write the Fig. 7-style chart here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report JSON here.")
def sensitivity_command(
    model: str, data: str, metric: str, mode: str, calib_split: str, images: int, calib_images: int, ap_images: int,
    ap_top: int, method: str, img_size: int, seed: int, top: int, plot_path: str | None, json_path: str | None,
) -> None:  # fmt: skip
    """Rank MODEL's quantizable layers by how much quantizing each one alone (or all but it) hurts.

    Prints the ranked table; --json and --plot save the report and the chart.
    """
    from ..core.evaluation_run import EvalConfig
    from ..deploy.export import load_model_source
    from ..quant.calibrate import calibration_batches
    from ..quant.sensitivity import SensitivityConfig, analyze_sensitivity, ap_evaluator, sensitivity_images

    config = SensitivityConfig(
        metrics=tuple(m.strip() for m in metric.split(",")), mode=mode, ap_top=ap_top, method=method, images=images,
        calib_images=calib_images, ap_images=ap_images, seed=seed,
    )  # fmt: skip
    EvalConfig(model=model, data=data, img_size=img_size)  # validates --img before any work
    if not Path(data).is_dir():
        raise DatasetError(f"--data {data}: no such directory")
    calib, heldout = sensitivity_images(data, split=calib_split, config=config)
    float_model = load_model_source(model)
    with contextlib.ExitStack() as stack:
        eval_fn = None
        if config.wants_ap:
            eval_fn = stack.enter_context(ap_evaluator(data, img_size=img_size, images=ap_images, seed=seed))
        batches = calibration_batches(calib, img_size, config.batch)
        report = analyze_sensitivity(
            float_model, batches, config=config, heldout=calibration_batches(heldout, img_size, config.batch),
            eval_fn=eval_fn,
        )  # fmt: skip
    click.echo(report.table(k=top or None))
    _save_outputs(report, json_path, plot_path)


def _save_outputs(report, json_path: str | None, plot_path: str | None) -> None:
    if json_path:
        click.echo(f"wrote {report.save_json(json_path)}")
    if plot_path:
        from ..quant.sensitivity_plot import plot_sensitivity

        click.echo(f"wrote {plot_sensitivity(report, plot_path, report.primary_metric)}")


COMMANDS = [sensitivity_command]
