"""Accuracy comparison results as values (the counterpart of Polygraphy's OutputCompareResult)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

__all__ = ["CompareResult", "compare_outputs"]


@dataclasses.dataclass(frozen=True)
class CompareResult:
    """Error statistics of one output against its reference; truthy when within tolerance.

    ``passed`` follows ``torch.isclose`` semantics elementwise: ``|test - ref| <= atol + rtol * |ref|``.
    ``max_rel_error`` is relative to the largest reference magnitude (robust for near-zero elements).
    """

    name: str
    shape: tuple[int, ...]
    max_abs_error: float
    mean_abs_error: float
    p99_abs_error: float
    max_rel_error: float
    ref_max_abs: float
    atol: float
    rtol: float
    passed: bool

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "OK" if self.passed else "FAIL"
        return (
            f"{self.name}: {verdict} max_abs={self.max_abs_error:.3g} mean_abs={self.mean_abs_error:.3g} "
            f"max_rel={self.max_rel_error:.3g} (|ref|max={self.ref_max_abs:.3g}, atol={self.atol:g}, "
            f"rtol={self.rtol:g})"
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def compare_outputs(
    ref: Tensor, test: Tensor, *, name: str = "output", atol: float = 1e-4, rtol: float = 1e-4
) -> CompareResult:
    """Compare ``test`` against ``ref`` (same shape) and return the statistics and the verdict."""
    if ref.shape != test.shape:
        raise ValueError(f"{name}: shape mismatch {tuple(ref.shape)} vs {tuple(test.shape)}")
    ref64, test64 = ref.detach().double().cpu(), test.detach().double().cpu()
    diff = (test64 - ref64).abs()
    ref_max = float(ref64.abs().max()) if ref64.numel() else 0.0
    flat = diff.flatten()
    p99 = float(torch.quantile(flat[: 1 << 24], 0.99)) if flat.numel() else 0.0
    return CompareResult(
        name=name,
        shape=tuple(ref.shape),
        max_abs_error=float(flat.max()) if flat.numel() else 0.0,
        mean_abs_error=float(flat.mean()) if flat.numel() else 0.0,
        p99_abs_error=p99,
        max_rel_error=(float(flat.max()) / ref_max) if ref_max > 0 else 0.0,
        ref_max_abs=ref_max,
        atol=atol,
        rtol=rtol,
        passed=bool(torch.all(diff <= atol + rtol * ref64.abs())),
    )
