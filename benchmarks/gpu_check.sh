#!/usr/bin/env bash
# GPU check: runs the CUDA / TensorRT tests that CI (CPU only) skips. Run it by hand on a machine with an NVIDIA
# GPU, its driver, a CUDA build of torch and TensorRT >= 10 (pip install -e ".[tensorrt,dev]"). CI never calls it.
#
#   benchmarks/gpu_check.sh            # versions, then every test marked `gpu`
#   PYTHON=python3 benchmarks/gpu_check.sh
#
# What the `gpu` tests do (tests/deploy/test_runners.py, tests/deploy/test_tensorrt_build.py):
#   - the Runner contract suite over TensorRTRunner (fp32 engine, TF32 off: parity <= 1e-4 with eager PyTorch);
#   - TorchRunner on CUDA: fp32/fp16, with and without CUDA-graph capture, against eager CPU;
#   - build an fp16 engine for yolov6n at 640 (batch 1..8, timing cache, sidecar, inspector report) and compare
#     TensorRTRunner with TorchRunner(cuda) on the same batch; a batch beyond the profile is refused.
# It fails (exit 1) if a gpu test fails, or if CUDA or TensorRT is missing (then the tests would only skip).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

echo "== versions"
"$PYTHON" -m yolodeploy.cli.main env
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

echo "== prerequisites"
"$PYTHON" - <<'PY'
import sys
import torch
from yolodeploy.deploy.runners.tensorrt_runner import unavailable_reason
reason = unavailable_reason()
if reason:
    sys.exit(f"gpu_check: cannot run the GPU tests: {reason}")
print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}; TensorRT ready")
PY

echo "== gpu tests"
"$PYTHON" -m pytest -m gpu -ra -s -q tests/deploy "$@"
