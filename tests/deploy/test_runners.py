"""One contract suite over every Runner class (PyTorch and ONNX Runtime always; OpenVINO where installed, TensorRT
where it can run),
then the backend-specific behaviour (create_runner, providers, checkpoints, CUDA paths on a GPU machine)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, randomize_bn_

from yolodeploy.core.compare import compare_outputs
from yolodeploy.deploy.runners import (
    Backend,
    OnnxRuntimeRunner,
    OpenVINORunner,
    Runner,
    TensorRTRunner,
    TorchRunner,
    create_runner,
    detect_backend,
)
from yolodeploy.deploy.runners.openvino_runner import is_available as openvino_available
from yolodeploy.deploy.runners.tensorrt_runner import unavailable_reason
from yolodeploy.errors import (
    BackendUnavailableError,
    ConfigError,
    FeedError,
    OnnxModelError,
    RunnerError,
)
from yolodeploy.models import create_model, save_checkpoint

IMG = 96
TRT_SKIP = unavailable_reason()
CUDA_SKIP = None if torch.cuda.is_available() else "no CUDA device (CPU build of torch or no NVIDIA GPU)"
gpu = pytest.mark.gpu


@pytest.fixture(scope="module")
def detector():
    """yolov6n (2 classes) in training form with random BN statistics, eval mode: the eager reference."""
    torch.manual_seed(0)
    model = create_model("yolov6n", num_classes=2)
    randomize_bn_(model)
    return model.eval()


@pytest.fixture(scope="module")
def onnx_file(detector, tmp_path_factory):
    from yolodeploy.deploy.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "yolov6n.onnx"
    export_onnx(detector, path, img_size=IMG, dynamic_batch=True, check=False)
    return path


@pytest.fixture(scope="module")
def engine_file(onnx_file):
    from yolodeploy.deploy.tensorrt_build import build_engine

    engine = onnx_file.with_suffix(".engine")
    build_engine(onnx_file, engine, batch_sizes=(1, 4), tf32=False)  # fp32 without TF32: parity within 1e-4
    return engine


RUNNER_KINDS = [
    pytest.param("torch", id="TorchRunner"),
    pytest.param("ort", id="OnnxRuntimeRunner"),
    pytest.param(
        "openvino",
        id="OpenVINORunner",
        marks=pytest.mark.skipif(not openvino_available(), reason="openvino not installed (pip install openvino)"),
    ),
    pytest.param(
        "trt",
        id="TensorRTRunner",
        marks=[gpu, pytest.mark.skipif(TRT_SKIP is not None, reason=f"TensorRTRunner not tested: {TRT_SKIP}")],
    ),
]


@pytest.fixture(params=RUNNER_KINDS)
def make_runner(request, detector):
    """A factory of fresh, inactive runners of one class over the same model."""
    kind = request.param
    if kind == "torch":
        return lambda: TorchRunner(detector)
    if kind == "ort":
        onnx_path = request.getfixturevalue("onnx_file")
        return lambda: OnnxRuntimeRunner(onnx_path, threads=2)
    if kind == "openvino":
        onnx_path = request.getfixturevalue("onnx_file")
        return lambda: OpenVINORunner(onnx_path, threads=1)
    engine = request.getfixturevalue("engine_file")
    return lambda: TensorRTRunner(engine)


def images(batch: int = 2, size: int = IMG, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 3, size, size), dtype=np.float32)


def assert_one_line(exc_info, *fragments: str) -> None:
    message = str(exc_info.value)
    assert "\n" not in message and message, message
    for fragment in fragments:
        assert fragment in message, message


# -- the contract ----------------------------------------------------------------------------------------
def test_context_manager_activates_and_deactivates(make_runner):
    runner = make_runner()
    assert isinstance(runner, Runner) and not runner.is_active
    with runner as active:
        assert active is runner and runner.is_active
        assert runner.activate() is runner  # idempotent
    assert not runner.is_active
    runner.deactivate()  # idempotent too
    assert runner.backend in {b.value for b in Backend} and runner.device


def test_input_metadata_and_output_names(make_runner):
    with make_runner() as runner:
        metadata = runner.input_metadata()
        assert list(metadata) == ["images"]
        meta = metadata["images"]
        assert meta.name == "images" and meta.dtype == np.float32
        assert len(meta.shape) == 4 and meta.shape[1] == 3
        assert not isinstance(meta.shape[0], int)  # dynamic batch
        assert runner.output_names() == ["outputs"]


def test_infer_equals_the_eager_model(make_runner, detector):
    x = images(batch=2)
    with torch.no_grad():
        expected = detector(torch.from_numpy(x))
    with make_runner() as runner:
        outputs = runner.infer({"images": x})
    assert list(outputs) == ["outputs"] and isinstance(outputs["outputs"], np.ndarray)
    result = compare_outputs(expected, torch.from_numpy(outputs["outputs"]), name="outputs", atol=1e-4, rtol=1e-4)
    assert result.max_rel_error <= 1e-4, str(result)


BAD_FEEDS = {
    "unknown name": (lambda x: {"image": x}, "unknown input 'image'"),
    "missing input": (lambda x: {}, "missing input 'images'"),
    "dtype": (lambda x: {"images": x.astype(np.float64)}, "dtype float64"),
    "rank": (lambda x: {"images": x[0]}, "rank 3"),
    "static dim": (lambda x: {"images": np.concatenate([x, x[:, :1]], axis=1)}, "dim 1 must be 3"),
    "not an array": (lambda x: {"images": x.tolist()}, "numpy array"),
}


@pytest.mark.parametrize("case", list(BAD_FEEDS))
def test_bad_feed_is_one_line_error(make_runner, case):
    build_feed, fragment = BAD_FEEDS[case]
    with make_runner() as runner:
        with pytest.raises(FeedError) as exc_info:
            runner.infer(build_feed(images(batch=1)))
    assert_one_line(exc_info, fragment)


def test_infer_needs_an_active_runner(make_runner):
    runner = make_runner()
    with pytest.raises(RunnerError) as exc_info:
        runner.infer({"images": images(batch=1)})
    assert_one_line(exc_info, "activate()")
    with runner:
        pass
    with pytest.raises(RunnerError):
        runner.infer({"images": images(batch=1)})
    with pytest.raises(RunnerError):
        runner.input_metadata()


# -- backend specifics -------------------------------------------------------------------------------------
def test_ort_static_spatial_dims_are_checked(onnx_file):
    with OnnxRuntimeRunner(onnx_file) as runner:
        with pytest.raises(FeedError) as exc_info:
            runner.infer({"images": images(batch=1, size=64)})
    assert_one_line(exc_info, "dim 2 must be 96")


def test_ort_dynamic_batch_and_bytes_source(onnx_file):
    with OnnxRuntimeRunner(onnx_file.read_bytes(), providers=["cpu"], optimization_level="basic") as runner:
        assert runner.device == "cpu" and runner.providers == ["CPUExecutionProvider"]
        assert runner.infer({"images": images(batch=3)})["outputs"].shape[0] == 3


def test_ort_missing_provider_and_bad_files(onnx_file, tmp_path):
    with pytest.raises(BackendUnavailableError) as exc_info:
        OnnxRuntimeRunner(onnx_file, providers=["cuda"]).activate()
    assert_one_line(exc_info, "CUDAExecutionProvider is not available")
    with pytest.raises(OnnxModelError) as exc_info:
        OnnxRuntimeRunner(tmp_path / "absent.onnx").activate()
    assert_one_line(exc_info, "no such ONNX file")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(onnx_file.read_bytes()[:1000])
    with pytest.raises(OnnxModelError) as exc_info:
        OnnxRuntimeRunner(corrupt).activate()
    assert_one_line(exc_info, "ONNX Runtime cannot load it")
    with pytest.raises(ConfigError):
        OnnxRuntimeRunner(onnx_file, optimization_level="max")


def test_torch_runner_leaves_the_callers_module_alone(detector):
    detector.train()
    try:
        with TorchRunner(detector) as runner:
            runner.infer({"images": images(batch=1)})
        assert detector.training and detector.form == "train"
    finally:
        detector.eval()


def test_torch_runner_from_checkpoint_and_create_runner(detector, tmp_path):
    path = save_checkpoint(detector, tmp_path / "n.safetensors")
    x = images(batch=1)
    with create_runner(path) as runner:
        assert isinstance(runner, TorchRunner)
        got = runner.infer({"images": x})["outputs"]
    with torch.no_grad():
        expected = detector(torch.from_numpy(x))
    assert compare_outputs(expected, torch.from_numpy(got)).max_rel_error <= 1e-4


def test_create_runner_picks_the_backend(detector, tmp_path):
    assert detect_backend(tmp_path / "m.onnx") is Backend.ORT
    assert detect_backend(tmp_path / "m.engine") is Backend.TRT
    assert detect_backend(tmp_path / "m.plan") is Backend.TRT
    assert detect_backend("m.pt") is Backend.TORCH and detect_backend(detector) is Backend.TORCH
    assert detect_backend(tmp_path / "m.xml") is Backend.OPENVINO and Backend.parse("ov") is Backend.OPENVINO
    assert isinstance(create_runner(tmp_path / "m.onnx", threads=1), OnnxRuntimeRunner)
    assert isinstance(create_runner(tmp_path / "m.onnx", backend="openvino", threads=1), OpenVINORunner)
    assert isinstance(create_runner(tmp_path / "m.engine"), TensorRTRunner)  # nothing loads before activate
    assert isinstance(create_runner(detector, backend="pytorch"), TorchRunner)
    with pytest.raises(ConfigError, match="cannot tell the backend"):
        create_runner(tmp_path / "m.bin")
    with pytest.raises(ConfigError, match="unknown backend"):
        create_runner(tmp_path / "m.onnx", backend="tflite")
    with pytest.raises(ConfigError, match="OnnxRuntimeRunner"):
        create_runner(tmp_path / "m.onnx", device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where CUDA is absent")
def test_cuda_paths_without_cuda_are_one_line_errors(detector, tmp_path):
    with pytest.raises(BackendUnavailableError) as exc_info:
        TorchRunner(detector, device="cuda").activate()
    assert_one_line(exc_info, "CUDA is not available")
    with pytest.raises(ConfigError, match="cuda_graph"):
        TorchRunner(detector, cuda_graph=True)
    with pytest.raises(BackendUnavailableError) as exc_info:
        TensorRTRunner(tmp_path / "m.engine").activate()
    assert_one_line(exc_info)


def test_importing_runners_loads_no_heavy_backend():
    code = (
        "import sys, yolodeploy.deploy.runners, yolodeploy.deploy.tensorrt_build, yolodeploy.deploy.env_report\n"
        "import yolodeploy.deploy.openvino_build\n"
        "heavy = [m for m in ('tensorrt', 'onnxruntime', 'pycuda', 'openvino') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr


# -- CUDA (GPU machines; benchmarks/gpu_check.sh) ---------------------------------------------------------------
@gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"CUDA runner paths not tested: {CUDA_SKIP}")
@pytest.mark.parametrize("half,cuda_graph", [(False, False), (True, False), (False, True), (True, True)])
def test_torch_runner_cuda(detector, half, cuda_graph):
    x = images(batch=2)
    with torch.no_grad():
        expected = detector(torch.from_numpy(x))
    feed = {"images": x.astype(np.float16) if half else x}
    with TorchRunner(detector, device="cuda", half=half, cuda_graph=cuda_graph) as runner:
        assert runner.device.startswith("cuda")
        first = runner.infer(feed)["outputs"]
        second = runner.infer(feed)["outputs"]  # a graph replay when captured
        if cuda_graph:
            assert runner.input_metadata()["images"].shape == (2, 3, IMG, IMG)
            with pytest.raises(FeedError):
                runner.infer({"images": feed["images"][:1]})
    np.testing.assert_array_equal(first, second)
    result = compare_outputs(expected, torch.from_numpy(first.astype(np.float32)))
    assert result.max_rel_error <= (1e-2 if half else 2e-3), str(result)  # cuDNN may use TF32 for fp32


@gpu
@pytest.mark.skipif(TRT_SKIP is not None, reason=f"TensorRT not tested: {TRT_SKIP}")
def test_tensorrt_runner_refuses_batch_beyond_profile(engine_file):
    with TensorRTRunner(engine_file) as runner:
        assert runner.infer({"images": images(batch=4)})["outputs"].shape[0] == 4
        with pytest.raises(FeedError) as exc_info:
            runner.infer({"images": images(batch=5)})
    assert_one_line(exc_info, "larger than the maximum 4")
