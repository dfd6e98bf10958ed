"""``yolodeploy build-engine``: a TensorRT engine (or an ONNX Runtime optimized graph, or OpenVINO IR) from an ONNX
file."""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]

# Options that only mean something to TensorRT (refused with --backend ort/openvino rather than silently ignored).
TRT_OPTIONS = ("fp16", "bs", "opt_bs", "min_shape", "opt_shape", "max_shape", "workspace", "timing_cache")


@click.command("build-engine")
@click.argument("onnx_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="trt: default MODEL.engine; ort: MODEL.ort.onnx; openvino: MODEL.xml.",
)
@click.option("--backend", type=click.Choice(["trt", "ort", "openvino"]), default="trt", show_default=True)
@click.option("--fp16", is_flag=True, help="trt: allow fp16 kernels (TensorRT 11: needs an fp16 ONNX).")
@click.option(
    "--int8",
    is_flag=True,
    help="int8 from the ONNX's Q/DQ nodes (run `yolodeploy quantize` first; ort: its *_ort.onnx).",
)
@click.option("--bs", help="trt: batch sizes the engine takes, e.g. 1,32 (profile min..max; default 1).")
@click.option("--opt-bs", type=int, help="trt: the batch TensorRT tunes for (default: the largest of --bs).")
@click.option("--min-shape", multiple=True, help="trt: explicit profile instead of --bs, e.g. 1x3x640x640.")
@click.option("--opt-shape", multiple=True, help="trt: explicit profile opt shape (default: --max-shape).")
@click.option("--max-shape", multiple=True, help="trt: explicit profile max shape.")
@click.option("--workspace", type=float, help="trt: builder workspace limit in GiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="trt: timing cache file (read, then updated).")
@click.option("--no-inspect", is_flag=True, help="trt: skip the per-layer report (<engine>.layers.json).")
@click.option(
    "--level",
    type=click.Choice(["basic", "extended", "all"]),
    default="extended",
    show_default=True,
    help="ort: graph optimization level to save (all adds CPU-specific layouts).",
)
@click.option("--threads", type=int, help="ort: intra-op threads of the optimizing session.")
@click.option(
    "--tune-bs",
    type=int,
    help="ort --int8: time ONNX Runtime's two int8 conv kernels per conv at this batch on this machine and keep "
    "the faster (exact; the file is then tuned for this CPU).",
)
def build_engine_command(onnx_path: str, output: str | None, backend: str, no_inspect: bool, **options) -> None:
    """Build a TensorRT engine from MODEL.onnx: the plan, its <engine>.json sidecar and <engine>.layers.json.
    With --backend ort, save ONNX Runtime's optimized graph instead (--level; MODEL.ort.onnx + sidecar); with
    --backend openvino, OpenVINO IR (MODEL.xml + MODEL.bin + sidecar; needs the openvino extra)."""
    from ..errors import ConfigError

    level, threads, tune_bs = options.pop("level"), options.pop("threads"), options.pop("tune_bs")
    if tune_bs is not None and not (backend == "ort" and options["int8"]):
        raise ConfigError("--tune-bs applies to --backend ort --int8 only")
    if backend in ("ort", "openvino"):
        given = [f"--{name.replace('_', '-')}" for name in TRT_OPTIONS if options[name] not in (None, False, ())]
        if given:
            raise ConfigError(f"{', '.join(given)}: TensorRT options, they do not apply to --backend {backend}")
    if backend == "openvino":
        if threads is not None or _given("level"):
            raise ConfigError("--threads and --level apply to --backend ort only")
        from ..deploy.openvino_build import convert_to_ir

        click.echo("\n".join(convert_to_ir(onnx_path, output, int8=options["int8"]).lines()))
        return
    if backend == "ort":
        from ..deploy.ort_build import optimize_onnx

        if options["int8"]:
            _check_has_qdq(onnx_path)
        report = optimize_onnx(onnx_path, output, level=level, threads=threads, tune_batch=tune_bs)
        if options["int8"]:
            click.echo("\n".join(report.lines()))
            click.echo(_int8_kernels_line(onnx_path))
            return
    else:
        if threads is not None:
            raise ConfigError("--threads applies to --backend ort only")
        from ..deploy.tensorrt_build import build_engine, default_engine_path

        report = build_engine(
            onnx_path,
            output or default_engine_path(onnx_path),
            fp16=options["fp16"],
            int8=options["int8"],
            batch_sizes=options["bs"],
            opt_batch=options["opt_bs"],
            min_shape=options["min_shape"],
            opt_shape=options["opt_shape"],
            max_shape=options["max_shape"],
            workspace_gib=options["workspace"],
            timing_cache=options["timing_cache"],
            inspect=not no_inspect,
        )
    click.echo("\n".join(report.lines()))


def _given(option: str) -> bool:
    """Whether the user typed ``option`` (rather than click filling in its default)."""
    source = click.get_current_context().get_parameter_source(option)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _check_has_qdq(onnx_path: str) -> None:
    """Refuse ``--int8`` on a graph without Q/DQ nodes (ONNX Runtime would run it in float)."""
    from ..deploy.onnx_utils import has_qdq, load_onnx_checked
    from ..errors import ConfigError

    if not has_qdq(load_onnx_checked(onnx_path)):
        raise ConfigError(f"--int8: {onnx_path} has no Q/DQ nodes; run `yolodeploy quantize` first")


def _int8_kernels_line(onnx_path: str) -> str:
    """The ``--int8 --backend ort`` summary: how many convs ONNX Runtime runs as int8 kernels."""
    from ..quant.export import ort_fusion_summary

    ops = ", ".join(f"{op} {count}" for op, count in ort_fusion_summary(onnx_path).items())
    return f"  int8 kernels (ORT CPU, all optimizations): {ops}"


COMMANDS = [build_engine_command]
