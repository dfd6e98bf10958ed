"""``yolodeploy bench`` and ``yolodeploy bench-compare``: latency per batch size, and regression reports."""

from __future__ import annotations

import sys

import click

__all__ = ["COMMANDS"]


def _batch_sizes(values: tuple[str, ...]) -> tuple[int, ...]:
    from ..errors import ConfigError

    try:
        return tuple(int(part) for value in values for part in value.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--bs takes integers (--bs 1 --bs 32, or --bs 1,32), got {' '.join(values)!r}") from None


@click.command("bench")
@click.argument("model")
@click.option(
    "--backend", default="auto", show_default=True, help="torch, ort, trt, openvino, or auto (from MODEL's suffix)."
)
@click.option("--bs", "batch_sizes", multiple=True, default=("1",), show_default=True, help="Batch size (repeatable).")
@click.option("--img", "img_size", type=int, default=None, help="Square input size [default: the model's].")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed calls before timing.")
@click.option("--iters", type=int, default=None, help="Timed calls per batch size [default: 20].")
@click.option("--seconds", type=float, default=None, help="Time budget per batch size instead of --iters.")
@click.option("--threads", type=int, default=None, help="Intra-op threads (torch, ONNX Runtime, OpenVINO).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--half", is_flag=True, help="fp16 (torch half, or an fp16 ONNX export for --backend ort).")
@click.option("--e2e", is_flag=True, help="Also time pre-processing, inference and NMS on real images (--images).")
@click.option("--images", type=click.Path(file_okay=False), default=None, help="Folder of JPEG/PNG files for --e2e.")
@click.option("--name", default=None, help="Label of the model in the JSON and reports.")
@click.option("--no-reference", is_flag=True, help="Skip the reference workload (then no --normalize compare).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the result here.")
def bench_command(model: str, batch_sizes: tuple[str, ...], half: bool, no_reference: bool, json_path, **options):
    """Benchmark MODEL (.onnx, .engine, OpenVINO .xml, checkpoint or registry name): latency and throughput per
    batch size.

    A registry name or checkpoint with --backend ort or openvino is exported to a temporary dynamic-batch ONNX
    first. An .onnx file runs on ONNX Runtime unless --backend openvino.
    """
    from ..bench.harness import BenchConfig, default_progress, run_benchmark

    config = BenchConfig(
        model=model,
        batch_sizes=_batch_sizes(batch_sizes),
        precision="fp16" if half else "fp32",
        reference=not no_reference,
        **options,
    )
    result = run_benchmark(config, default_progress() if sys.stderr.isatty() else None)
    click.echo(result.table())
    if json_path:
        click.echo(f"wrote {result.save(json_path)}")


@click.command("bench-compare")
@click.argument("baseline", type=click.Path(dir_okay=False))
@click.argument("current", type=click.Path(dir_okay=False))
@click.option("--max-regression", default="10%", show_default=True, help="Tolerated slowdown (10% or 0.10).")
@click.option("--normalize", is_flag=True, help="Divide latencies by each run's reference workload time first.")
@click.option("--metric", default="p50", show_default=True, help="Latency statistic: p50, mean, p90, p99, min.")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Also write the markdown here.")
def bench_compare_command(baseline: str, current: str, max_regression: str, normalize: bool, metric: str, report):
    """Compare CURRENT against BASELINE benchmark JSON; exit code 1 if any entry regressed beyond the threshold."""
    from ..bench.compare import compare_results, parse_threshold
    from ..utils.io import atomic_write_text

    comparison = compare_results(
        baseline,
        current,
        max_regression=parse_threshold(max_regression),
        normalize=normalize,
        metric=metric.removesuffix("_ms") + "_ms",
    )
    markdown = comparison.to_markdown()
    click.echo(markdown, nl=False)
    if report:
        atomic_write_text(report, markdown)
    if not comparison.passed:
        sys.exit(1)


COMMANDS = [bench_command, bench_compare_command]
