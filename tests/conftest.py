"""Shared test helpers: where the reference fixtures are, and tiny numeric utilities.

The reference fixtures (state_dict manifests and numerical oracles produced from the official
implementations) are found through ``YOLODEPLOY_FIXTURES`` (default: ``../shared/fixtures`` beside the
checkout, where CI has them). Tests that need them skip with a visible reason when they are absent.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from yolodeploy.core.init import randomize_bn_, randomize_constants_  # noqa: F401  (re-exported for tests)
from yolodeploy.utils.threads import torch_threads

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("YOLODEPLOY_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures")).resolve()
REFERENCE = FIXTURES / "reference"


def reference_dir(family: str, model: str) -> Path:
    """The fixture folder of one official model, or skip the calling test with the reason."""
    path = REFERENCE / family / model
    if not path.is_dir():
        pytest.skip(f"reference fixtures not found at {path} (set YOLODEPLOY_FIXTURES to the fixtures folder)")
    return path


def reference_models(family: str) -> list[str]:
    """Model folder names of one family (empty when the fixtures are absent: parametrized tests then skip)."""
    root = REFERENCE / family
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def load_manifest(path: Path) -> list[tuple[str, list[int], str]]:
    """The ordered ``(key, shape, dtype)`` list of a manifest JSON."""
    return [tuple(entry) for entry in json.loads(path.read_text())["state_dict"]]


def state_dict_manifest(model: torch.nn.Module) -> list[tuple[str, list[int], str]]:
    """The same ``(key, shape, dtype)`` list for a live model."""
    return [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]


def max_rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| relative to max |expected| (robust to tiny and huge activations alike)."""
    scale = expected.abs().max().clamp_min(1e-12)
    return float((actual - expected).abs().max() / scale)


def randomize_implicit_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw YOLOR implicit knowledge as the reference fixtures did (ImplicitA ~ N(0, 0.1^2), ImplicitM ~
    N(1, 0.1^2), module by module), so that folding it into the output convs is really exercised."""
    from yolodeploy.core.layers_v7 import ImplicitA, ImplicitM

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (ImplicitA, ImplicitM)):
                noise = torch.randn(module.implicit.shape, generator=gen) * 0.1
                module.implicit.copy_(noise + (1.0 if isinstance(module, ImplicitM) else 0.0))
    return model


def export_tiny_onnx(path: Path, *, img_size: int = 32, dynamic_batch: bool = True, seed: int = 0) -> torch.nn.Module:
    """A tiny conv net exported as ``images`` (B, 3, H, W) -> ``outputs`` (B, 6, H*W), the deploy I/O names.

    For tests that need *an* ONNX file fast (engine builds, CLI); zoo exports use ``deploy.export.export_onnx``.
    Returns the eval-mode module, for parity checks.
    """
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 6, 1), torch.nn.Flatten(2)
    ).eval()
    dynamic_axes = {"images": {0: "batch"}, "outputs": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, and fast
        torch.onnx.export(
            net,
            torch.rand(1, 3, img_size, img_size),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["outputs"],
            dynamic_axes=dynamic_axes,
        )
    return net


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` (not a package) as a module; its folder is on ``sys.path`` meanwhile, for
    scripts that import their neighbours."""
    import importlib.util
    import sys

    folder = str(REPO_ROOT / "benchmarks")
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def run_cli(*args):
    """Invoke the ``yolodeploy`` CLI in-process (arguments converted to strings)."""
    from click.testing import CliRunner

    from yolodeploy.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *fragments: str) -> None:
    """A user error: exit code 1, exactly one ``error: ...`` line holding every fragment, no traceback."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def single_thread_torch():
    """Tiny inputs gain nothing from 2 threads, and on a shared 2-core machine OpenMP barriers then stall each
    conv for ~50 ms (a 128x128 forward: 9 s with 2 threads under load, 0.05 s with 1).

    Use with ``pytestmark = pytest.mark.usefixtures("single_thread_torch")``.
    """
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A 12-image, 2-class, 64-px synthetic COCO dataset root (train 8 / val 2 / calib 2). Treat it as read-only."""
    from yolodeploy.core.data.synth import synthesize_dataset

    return synthesize_dataset(tmp_path_factory.mktemp("tiny") / "ds", images=12, classes=2, img_size=64, seed=0).root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """yolov6n (2 classes) with trained-like random weights and BN statistics, as a portable checkpoint."""
    from yolodeploy.core.init import randomize_for_verification_
    from yolodeploy.models import create_model, save_checkpoint

    torch.manual_seed(0)
    model = randomize_for_verification_(create_model("yolov6n", num_classes=2), 0).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("tiny_ckpt") / "yolov6n_2cls.safetensors")
