"""A fixed reference workload, measured in the same run as a benchmark, to normalize its latencies.

Why: a shared CI machine (here 2 cores with other tenants) changes speed between runs by tens of percent:
another job, a different host CPU, thermal state, frequency scaling. A raw "p50 went from 70 to 80 ms" then says
as much about the machine as about the code. So every ``yolodeploy bench`` run also times this workload, on the
same device and with the same thread count as the model, right before and right after the model's batches, and
records its median as ``reference.ms``. ``bench-compare --normalize`` divides every latency by its own run's
``reference.ms`` before taking the current/baseline ratio: a machine that is uniformly 30 % slower makes both the
model and the reference 30 % slower, and the normalized ratio stays at 1.0.

The method (versioned by ``REFERENCE_VERSION``; results made with another version are not comparable):

- The workload is a plain PyTorch conv stack, the same kind of work a YOLO backbone does: seven 3x3
  convolutions (3->16 s2, 16->32 s2, 32->32, 32->64 s2, 64->64, 64->128 s2, 128->128), each followed by SiLU,
  on one 3x320x320 image (0.28 GMACs), float32, under ``torch.inference_mode``.
- Weights and input come from ``torch.Generator().manual_seed(0)``, so the workload is identical in every run.
- It is timed with the benchmark's own timer (``perf_counter``; CUDA events on a GPU), warm-up first. The
  figure is the median of the runs before and after the model together; both halves are kept in the JSON too,
  so a drift during the run is visible.
- It uses PyTorch whatever the benchmarked backend is, so all figures of one file share one denominator.

Limits: the normalization removes machine-wide speed changes (load, clocks, a faster or slower host), not
changes that hit one backend only, nor the difference between two CPU micro-architectures, whose speed-ups differ
between convolution kernels. Compare normalized figures between runs on the same kind of machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["REFERENCE_VERSION", "REFERENCE_SPEC", "make_reference_workload", "normalized_latency"]

REFERENCE_VERSION = 1

REFERENCE_SPEC: dict[str, Any] = {
    "name": "conv_stack",
    "version": REFERENCE_VERSION,
    # (in_channels, out_channels, stride) of each 3x3 conv + SiLU
    "layers": [(3, 16, 2), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)],
    "input": (1, 3, 320, 320),
    "dtype": "float32",
    "seed": 0,
}


def make_reference_workload(device: str = "cpu") -> Callable[[], object]:
    """The reference workload as a zero-argument callable on ``device`` (weights and input fixed by the seed).

    Example:
        >>> work = make_reference_workload()
        >>> work()  # one forward pass of the fixed conv stack
    """
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(REFERENCE_SPEC["seed"])
    weights = [
        (torch.randn(out_ch, in_ch, 3, 3, generator=generator) * (2.0 / (in_ch * 9)) ** 0.5).to(device)
        for in_ch, out_ch, _ in REFERENCE_SPEC["layers"]
    ]
    strides = [stride for _, _, stride in REFERENCE_SPEC["layers"]]
    image = torch.rand(REFERENCE_SPEC["input"], generator=generator).to(device)

    def workload() -> object:
        with torch.inference_mode():
            x = image
            for weight, stride in zip(weights, strides):
                x = F.silu(F.conv2d(x, weight, stride=stride, padding=1))
        return x

    return workload


def normalized_latency(latency_ms: float, reference_ms: float) -> float:
    """A latency in units of the reference workload's time (dimensionless; comparable across machine states)."""
    if not reference_ms or reference_ms <= 0:
        raise ValueError(f"reference time must be positive, got {reference_ms}")
    return latency_ms / reference_ms
