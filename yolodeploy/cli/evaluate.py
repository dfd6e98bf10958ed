"""``yolodeploy eval``: COCO mAP of a model on a dataset split, through any backend."""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]


@click.command("eval")
@click.argument("model", metavar="MODEL")
@click.option("--data", required=True, type=click.Path(), help="Dataset root (images/<split>, annotations/).")
@click.option("--split", default="val", show_default=True, help="Split to evaluate.")
@click.option(
    "--backend", type=click.Choice(["auto", "torch", "ort", "trt", "openvino"]), default="auto", show_default=True,
    help="auto: from MODEL's suffix (.onnx -> ort, .engine -> trt, .xml -> openvino, else torch).",
)  # fmt: skip
@click.option("--img", "img_size", default=320, show_default=True, help="Square letterbox size.")
@click.option("--border", default=0, show_default=True, help="Gray letterbox frame in pixels (YOLOv6 §3.1).")
@click.option("--batch", default=8, show_default=True, help="Images per inference call.")
@click.option("--conf", default=0.001, show_default=True, help="NMS score threshold.")
@click.option("--iou", default=0.65, show_default=True, help="NMS IoU threshold.")
@click.option("--max-det", default=300, show_default=True, help="Detections kept per image.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write metrics, config and timing here.")
def eval_command(
    model: str, data: str, split: str, backend: str, img_size: int, border: int, batch: int, conf: float, iou: float,
    max_det: int, json_path: str | None,
) -> None:  # fmt: skip
    """COCO mAP (AP, AP50, AP75, APs/m/l) of MODEL on a split of a COCO-format dataset.

    MODEL is a checkpoint (.safetensors), an official .pt, a registry name (random weights) or an ONNX file
    exported without --nms. Preprocessing (letterbox) and NMS are the same for every backend.
    """
    from ..core.evaluation_run import EvalConfig, evaluate_model

    config = EvalConfig(
        model=model, data=data, split=split, backend=backend, img_size=img_size, border=border, batch=batch,
        conf=conf, iou=iou, max_det=max_det,
    )  # fmt: skip
    result = evaluate_model(config)
    click.echo("\n".join(result.lines()))
    if json_path:
        click.echo(f"wrote {result.save(json_path)}")


COMMANDS = [eval_command]
