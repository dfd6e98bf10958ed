"""``import yolodeploy`` must stay light: no heavy optional backends, no CUDA initialisation."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT


def test_import_does_not_pull_optional_backends():
    code = (
        "import sys, yolodeploy, yolodeploy.models, yolodeploy.cli.main\n"
        "heavy = [m for m in ('tensorrt', 'onnxruntime', 'onnx', 'pycuda', 'openvino') if m in sys.modules]\n"
        "import torch\n"
        "assert not heavy, heavy\n"
        "assert not torch.cuda.is_initialized()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
