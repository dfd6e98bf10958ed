"""``yolodeploy export`` (ONNX, with optional NMS) and ``yolodeploy export-triton`` (a Triton model repository)."""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]


@click.command("export")
@click.argument("checkpoint", metavar="CKPT")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Destination .onnx file.")
@click.option("--opset", default=17, show_default=True, help="ONNX opset (checked in the written file).")
@click.option("--dynamic-batch", is_flag=True, help="Dynamic batch dimension (named 'batch').")
@click.option("--img", "img_size", type=int, help="Square input size [default: the model's input size, e.g. 640].")
@click.option("--half", is_flag=True, help="fp16 weights and fp16 input/outputs.")
@click.option(
    "--nms",
    type=click.Choice(["none", "ort", "trt"]),
    default="none",
    show_default=True,
    help="Append NMS: ort = standard ONNX ops, trt = TensorRT's EfficientNMS_TRT plugin.",
)
@click.option("--topk", default=100, show_default=True, help="NMS: detections kept per image.")
@click.option("--iou", default=0.65, show_default=True, help="NMS: IoU threshold.")
@click.option("--conf", default=0.001, show_default=True, help="NMS: score threshold.")
@click.option(
    "--exporter",
    type=click.Choice(["torchscript", "dynamo"]),
    default="torchscript",
    show_default=True,
    help="torch.onnx.export path (dynamo needs --opset 18 for these models).",
)
@click.option(
    "--flavour",
    type=click.Choice(["ort", "trt"]),
    default=None,
    help="Quantized checkpoints: Q/DQ for ONNX Runtime/OpenVINO (ort, uint8; the default) or TensorRT (trt, int8).",
)
@click.option(
    "--check-data",
    type=click.Path(exists=True),
    default=None,
    help="Quantized checkpoints: dataset root or image folder whose images the Q/DQ parity check runs on.",
)
@click.option(
    "--uint8-input",
    is_flag=True,
    help="Take the letterboxed uint8 RGB image as (B, H, W, 3) and convert it in the graph (an INT8 ORT file "
    "feeds it straight to its first conv).",
)
@click.option("--no-check", is_flag=True, help="Skip the ONNX Runtime parity check.")
def export_command(
    checkpoint: str,
    output: str,
    opset: int,
    dynamic_batch: bool,
    img_size: int | None,
    half: bool,
    nms: str,
    topk: int,
    iou: float,
    conf: float,
    exporter: str,
    flavour: str | None,
    check_data: str | None,
    uint8_input: bool,
    no_check: bool,
) -> None:
    """Export the deploy form of CKPT to ONNX and check it in ONNX Runtime against PyTorch.

    CKPT is a yolodeploy checkpoint (.safetensors), an official YOLOv6/v7/v9 .pt, or a model name from
    `yolodeploy models` (random weights: for benchmarks and tests only). A quantized checkpoint (from
    `yolodeploy quantize`) is written as explicit Q/DQ ONNX with the graph passes (--flavour), e.g. at another
    --img than it was calibrated at, and checked against its fake-quant model within one quantization step on
    real images (--check-data; random noise has no detections to compare).
    """
    from ..core.preprocess import square_side
    from ..deploy.export import export_onnx, load_model_source
    from ..deploy.nms import NMSConfig
    from ..errors import ConfigError
    from ..quant.model import QUANTIZED_FORM

    model = load_model_source(checkpoint)
    if getattr(model, "form", None) == QUANTIZED_FORM:
        refused = {"--half": half, "--nms": nms != "none", "--exporter dynamo": exporter != "torchscript"}
        if any(refused.values()):
            given = ", ".join(name for name, on in refused.items() if on)
            raise ConfigError(f"{given}: not for a quantized checkpoint (its Q/DQ export is fp32 I/O, raw outputs)")
        if check_data is None and not no_check:
            raise ConfigError("a quantized checkpoint is checked on real images: pass --check-data DIR, or --no-check")
        img = img_size or square_side(getattr(model, "input_size", None)) or 640
        lines = export_quantized(
            model, output, img, dynamic_batch, opset, flavour or "ort", check_data=check_data, uint8_input=uint8_input
        )
        click.echo("\n".join(lines))
        return
    if flavour is not None or check_data is not None:
        raise ConfigError(
            "--flavour and --check-data apply to quantized checkpoints (the .safetensors `yolodeploy quantize` writes)"
        )
    report = export_onnx(
        model,
        output,
        img_size=img_size,
        opset=opset,
        dynamic_batch=dynamic_batch,
        half=half,
        nms=NMSConfig(nms, topk=topk, iou=iou, conf=conf),
        check=not no_check,
        exporter=exporter,
        uint8_input=uint8_input,
    )
    click.echo("\n".join(report.lines()))


def export_quantized(
    qmodel,
    output: str,
    img: int,
    dynamic_batch: bool,
    opset: int,
    flavour: str,
    *,
    check_data: str | None,
    uint8_input: bool = False,
) -> list[str]:
    """Q/DQ export of a quantized model; with ``check_data``, the file lands only if ONNX Runtime agrees with the
    fake-quant model within one quantization step on 4 of its images (letterboxed like calibration). With
    ``uint8_input`` the checked file then takes raw uint8 pixels (identical outputs, checked)."""
    import onnx

    from ..errors import ExportError
    from ..quant.calibrate import calibration_batches, calibration_images
    from ..quant.export import build_qdq_graph, check_qdq_parity
    from ..utils.io import atomic_path

    proto, report = build_qdq_graph(qmodel, img_size=img, dynamic_batch=dynamic_batch, opset=opset, flavour=flavour)
    batch = "dynamic" if dynamic_batch else "static"
    lines = [f"{output}: Q/DQ ONNX ({flavour} flavour), opset {opset}, {img}x{img}, {batch} batch, "
             f"{report.qdq_nodes_final} Q/DQ"]  # fmt: skip
    with atomic_path(output) as tmp:
        onnx.save(proto, str(tmp))
        if check_data is not None:
            # 4 images are plenty for a parity check: no "too few calibration images" warning
            paths = calibration_images(check_data, count=4, min_recommended=0)
            batches = calibration_batches(paths, img, batch=2 if dynamic_batch else 1)
            parity = check_qdq_parity(qmodel, tmp, batches, flavour=flavour)
            if not parity.ok:
                raise ExportError(f"file not written: {parity.summary()}")
            lines.append(f"  {parity.summary()}")
        if uint8_input:
            lines += [f"  {line}" for line in _to_uint8_input(tmp, img, batch=2 if dynamic_batch else 1)]
    return lines


def _to_uint8_input(path, img: int, batch: int) -> list[str]:
    """Rewrite the ONNX file at ``path`` to take uint8 pixels (``deploy.image_input.to_uint8_input``)."""
    import onnx

    from ..deploy.image_input import to_uint8_input

    uint8_model, lines = to_uint8_input(onnx.load(str(path)), img, batch=batch)
    onnx.save(uint8_model, str(path))
    return lines


def _batch_list(value: str | None) -> list[int]:
    from ..errors import ConfigError

    try:
        return [int(item) for item in (value or "").split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"--preferred-batch {value!r}: expected comma-separated integers, e.g. 8,16,32") from None


@click.command("export-triton")
@click.argument("model_file", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "repository",
    required=True,
    type=click.Path(file_okay=False),
    help="Triton model repository folder.",
)
@click.option("--name", help="Model name in Triton [default: MODEL's file stem].")
@click.option(
    "--platform",
    type=click.Choice(["auto", "onnxruntime_onnx", "tensorrt_plan"]),
    default="auto",
    show_default=True,
    help="auto: .onnx -> onnxruntime_onnx, .engine/.plan -> tensorrt_plan.",
)
@click.option("--max-batch", default=32, show_default=True, help="Largest batch Triton forms (0: no batching).")
@click.option("--preferred-batch", help="Batch sizes the dynamic batcher aims for, e.g. 8,16,32.")
@click.option("--max-queue-delay-us", default=100, show_default=True, help="Dynamic batching queue delay.")
@click.option("--instances", default=1, show_default=True, help="Model instances (instance_group count).")
@click.option("--version", "version", default=1, show_default=True, help="Version folder.")
@click.option("--force", is_flag=True, help="Replace an existing model folder of that name.")
def export_triton_command(
    model_file: str,
    repository: str,
    name: str | None,
    platform: str,
    max_batch: int,
    preferred_batch: str | None,
    max_queue_delay_us: int,
    instances: int,
    version: int,
    force: bool,
) -> None:
    """Write a Triton Inference Server model folder for MODEL (.onnx, or a TensorRT .engine with its sidecar):
    <REPO>/<name>/<version>/model.onnx|model.plan and <REPO>/<name>/config.pbtxt."""
    from pathlib import Path

    from ..deploy.triton import export_triton

    folder = export_triton(
        model_file,
        repository,
        name=name or Path(model_file).stem,
        platform=platform,
        max_batch_size=max_batch,
        preferred_batch_sizes=_batch_list(preferred_batch),
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        version=version,
        overwrite=force,
    )
    click.echo(f"{model_file} -> {folder} ({(folder / 'config.pbtxt')})")
    click.echo((folder / "config.pbtxt").read_text().rstrip())


COMMANDS = [export_command, export_triton_command]
