"""A per-layer sensitivity chart in the style of the YOLOv6 paper's Fig. 7 (appendix B.2).

The x axis is the layer index in model order; bars give the chosen metric per layer (log scale for MSE, and for
cosine plotted as ``1 - cosine``), the ``top_k`` most sensitive layers are highlighted and labelled, and when the
report has direct AP the AP drop is drawn as points on a second axis. matplotlib is imported lazily (Agg backend).

Example:
    >>> plot_sensitivity(report, "sens.png", metric="mse", top_k=6)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..utils.io import atomic_path
from .sensitivity import SensitivityMetric, SensitivityMode, SensitivityReport

__all__ = ["plot_sensitivity"]

_NORMAL, _HIGHLIGHT, _AP = "#7f9fbf", "#d62728", "#2ca02c"


def _series(report: SensitivityReport, metric: SensitivityMetric) -> tuple[list[float], str, bool]:
    """The bar heights (NaN where absent), the y label, and whether a log scale fits."""
    values = [report.results[name].get(metric.key, math.nan) for name in report.layers]
    if metric is SensitivityMetric.COSINE:
        return [1.0 - v for v in values], "1 - cosine similarity", True
    if metric is SensitivityMetric.SNR:
        return [v if math.isfinite(v) else math.nan for v in values], "SNR (dB)", False
    if metric is SensitivityMetric.AP:
        return values, "AP drop", False
    return values, "output MSE", True


def plot_sensitivity(
    report: SensitivityReport,
    path: str | os.PathLike,
    metric: SensitivityMetric | str = SensitivityMetric.MSE,
    *,
    top_k: int = 6,
) -> Path:
    """Draw the per-layer ``metric`` of ``report`` to ``path`` (format from the suffix, png by default).

    Args:
        report: a :class:`SensitivityReport`.
        path: the image file, written atomically.
        metric: the metric drawn as bars (``mse``, ``snr``, ``cosine`` or ``ap``).
        top_k: how many of the most sensitive layers to highlight and label.

    Returns:
        ``path``.

    Raises:
        ConfigError: the report has no values for ``metric``.

    Example:
        >>> plot_sensitivity(report, "sens.png", metric="snr")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = report.check_metric(metric)
    values, ylabel, log = _series(report, metric)
    top = set(report.top(top_k, metric))
    index = list(range(len(report.layers)))
    positive = [v for v in values if math.isfinite(v) and v > 0]
    log = log and bool(positive)
    floor = min(positive) / 10 if log else 0.0
    heights = [(v if math.isfinite(v) and (v > 0 or not log) else floor) for v in values]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.16 * len(index)), 4.5))
    try:
        colors = [_HIGHLIGHT if name in top else _NORMAL for name in report.layers]
        ax.bar(index, heights, color=colors, width=0.8, bottom=floor if log else None, label=ylabel)
        if log:
            ax.set_yscale("log")
        for i, name in enumerate(report.layers):
            if name in top:
                ax.annotate(name, (i, heights[i]), rotation=90, fontsize=6, ha="center", va="bottom")
        ax.set_xlabel("layer index (model order)")
        ax.set_ylabel(ylabel)
        ax.set_xlim(-1, len(index))
        mode = "only this layer quantized" if report.config.mode is SensitivityMode.ONE_ON else "all but this layer"
        ax.set_title(f"Quantization sensitivity ({mode}; top {len(top)} by {metric.value} in red)", fontsize=9)
        if metric is not SensitivityMetric.AP:
            _draw_ap_drop(report, ax)
        fig.tight_layout()
        suffix = Path(path).suffix.lstrip(".").lower() or "png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix, dpi=120)
    finally:
        plt.close(fig)
    return Path(path)


def _draw_ap_drop(report: SensitivityReport, ax) -> None:
    """AP drop of the evaluated layers as points on a second y axis (nothing when the report has no AP)."""
    points = [(i, report.results[n]["ap_drop"]) for i, n in enumerate(report.layers) if "ap_drop" in report.results[n]]
    if not points:
        return
    twin = ax.twinx()
    twin.plot([p[0] for p in points], [p[1] for p in points], "o", color=_AP, markersize=4, label="AP drop")
    twin.set_ylabel("AP drop", color=_AP)
    twin.tick_params(axis="y", colors=_AP)
