"""The quantization report: AP and latency of FP32, PTQ, partial PTQ and QAT side by side (issue 6 item 8).

One markdown table and one JSON file, written next to each other. Only measured numbers are shown: a cell that
was not measured reads ``—`` (and is absent from the JSON), never a guess. Speed-ups are computed only between
latencies of the same ``results`` dict, i.e. measured in the same run on the same machine.

``results`` layout (what :func:`yolodeploy.quant.ptq.run_ptq` produces, the ``qat`` row with ``--qat``)::

    {"rows": {"fp32": {"ap": 0.41, "ap50": 0.60, "latency_ms": {"1": 12.3, "32": 300.1},
                       "command": "yolodeploy quantize best.safetensors --data data --ptq --qat -o runs/q"},
              "ptq": {...}, "ptq_top6": {...}, "qat": {...}},
     ...anything else (config, files, parity, qat history) is kept in the JSON as is}

The **record** of a run (:func:`quant_record`, ``yolodeploy quantize ... --json FILE``) is the rows alone, each
with ``ap``, ``ap50``, ``latency_ms`` (ORT CPU p50 per batch size, when measured) and ``command`` (the argv that
produced that model; null from the Python API): ``{"version": 1, "rows": {...}}``.

Example:
    >>> md_path, json_path = write_report({"rows": {"fp32": {"ap": 0.41, "ap50": 0.6}}}, "runs/quant")
    >>> write_record({"rows": {"fp32": {"ap": 0.41, "ap50": 0.6, "command": None}}}, "runs/quant.json")
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..utils.io import atomic_write_text
from ..utils.markdown import markdown_table

__all__ = [
    "REPORT_STEM", "NOT_MEASURED", "RECORD_FIELDS", "row_label", "report_table", "greedy_table", "float_cost_table",
    "write_report", "quant_record", "write_record",
]  # fmt: skip

REPORT_STEM = "quant_report"
RECORD_VERSION = 1
#: The fields of one row of the record, in order (``latency_ms`` only when measured).
RECORD_FIELDS = ("ap", "ap50", "latency_ms", "command")
#: What a cell that was not measured shows.
NOT_MEASURED = "—"
_ORDER = ("fp32", "ptq", "ptq_top", "qat")


def row_label(key: str) -> str:
    """The table label of a row key: ``fp32`` -> FP32, ``ptq_top6`` -> partial PTQ (top-6), ``qat`` -> QAT."""
    if key.startswith("ptq_top"):
        return f"partial PTQ (top-{key.removeprefix('ptq_top')})"
    return {"fp32": "FP32", "ptq": "PTQ", "qat": "QAT"}.get(key, key)


def _sort_key(key: str) -> tuple[int, str]:
    index = next((i for i, prefix in enumerate(_ORDER) if key == prefix or key.startswith(prefix)), len(_ORDER))
    return index, key


def _number(value: Any, digits: int) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return NOT_MEASURED


def _batch_sizes(rows: dict[str, dict[str, Any]]) -> list[str]:
    sizes = {str(bs) for row in rows.values() for bs in (row.get("latency_ms") or {})}
    return sorted(sizes, key=int)


def _rows(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows = results.get("rows")
    if not isinstance(rows, dict) or not rows:
        raise ConfigError("the report needs results['rows'] with at least one model (e.g. 'fp32')")
    return rows


def report_table(results: dict[str, Any]) -> str:
    """The markdown table of ``results["rows"]``: AP, AP50, and per batch size p50 latency and speed-up vs FP32."""
    rows = _rows(results)
    sizes = _batch_sizes(rows)
    base = (rows.get("fp32") or {}).get("latency_ms") or {}
    header = ["model", "AP", "AP50"]
    for bs in sizes:
        header += [f"bs{bs} p50 ms", f"bs{bs} speed-up"]
    table = []
    for key in sorted(rows, key=_sort_key):
        row = rows[key]
        latency = row.get("latency_ms") or {}
        cells = [row_label(key), _number(row.get("ap"), 4), _number(row.get("ap50"), 4)]
        for bs in sizes:
            ms, ref = latency.get(bs), base.get(bs)
            speedup = ref / ms if isinstance(ms, (int, float)) and isinstance(ref, (int, float)) and ms > 0 else None
            cells += [_number(ms, 2), f"{speedup:.2f}×" if speedup is not None else NOT_MEASURED]
        table.append(cells)
    return markdown_table(header, table)


def greedy_table(greedy: list[dict[str, Any]]) -> str:
    """The ``--max-ap-drop`` steps: float layers, the layer each step added, AP drop, and (when measured) the
    ORT latency of that step's INT8 model and its cost, the latency added by the layer kept float."""
    sizes = sorted({str(bs) for step in greedy for bs in (step.get("latency_ms") or {})}, key=int)
    header = ["float layers", "layer kept float", "AP drop"]
    for bs in sizes:
        header += [f"bs{bs} ms", f"bs{bs} cost ms"]
    table = []
    for step in greedy:
        cells = [str(step.get("float_layers", NOT_MEASURED)), step.get("layer") or "(none)"]
        cells.append(_number(step.get("ap_drop"), 4))
        for bs in sizes:
            cost = (step.get("latency_cost_ms") or {}).get(bs)
            cells += [
                _number((step.get("latency_ms") or {}).get(bs), 2),
                f"{cost:+.2f}" if cost is not None else NOT_MEASURED,
            ]
        table.append(cells)
    return markdown_table(header, table, ["---:", "---"] + ["---:"] * (len(header) - 2))


def float_cost_table(float_costs: dict[str, Any], float_layers: list[str]) -> str:
    """The ``--cost-aware`` candidates in the order they were picked from: sensitivity rank, gain, measured cost
    of keeping the layer float, gain per ms, and whether it was kept float."""
    kept = set(float_layers)
    header = ["order", "layer", "sensitivity rank", "gain", f"bs{float_costs.get('batch', '?')} cost ms", "gain / ms",
              "float"]  # fmt: skip
    table = [
        [str(i), row["layer"], str(row["sensitivity_rank"]), f"{row['gain']:.3g}", f"{row['cost_ms']:+.3f}",
         f"{row['gain_per_ms']:.3g}", "yes" if row["layer"] in kept else ""]
        for i, row in enumerate(float_costs.get("candidates", []), 1)
    ]  # fmt: skip
    return markdown_table(header, table, ["---:", "---", "---:", "---:", "---:", "---:", "---"])


def write_report(results: dict[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``quant_report.md`` (the table and the notes) and ``quant_report.json`` (``results``) atomically.

    Args:
        results: ``{"rows": {...}}`` as in the module docstring, plus any other JSON-able fields.
        out_dir: the folder to write into (created if missing).

    Returns:
        ``(markdown_path, json_path)``.

    Raises:
        ConfigError: no rows.

    Example:
        >>> write_report({"rows": {"fp32": {"ap": 0.41}, "ptq": {"ap": 0.40}}}, "runs/quant")
    """
    table = report_table(results)
    out_dir = Path(out_dir)
    notes = [f"- {note}" for note in results.get("notes", [])]
    greedy = ["## --max-ap-drop steps", "", greedy_table(results["greedy"]), ""] if results.get("greedy") else []
    costs = results.get("float_costs")
    cost = []
    if costs:
        title = f"## --cost-aware: float cost of each candidate ({costs['int8_ms']:.2f} ms all int8)"
        cost = [title, "", float_cost_table(costs, results.get("float_layers", [])), ""]
    text = "\n".join(["# Quantization report", "", table, "", *cost, *greedy, *notes]).rstrip() + "\n"
    md_path, json_path = out_dir / f"{REPORT_STEM}.md", out_dir / f"{REPORT_STEM}.json"
    atomic_write_text(md_path, text)
    atomic_write_text(json_path, json.dumps(results, indent=1, default=str) + "\n")
    return md_path, json_path


def quant_record(results: dict[str, Any]) -> dict[str, Any]:
    """The record of a run: ``{"version": 1, "rows": {key: {ap, ap50, latency_ms, command}}}`` in report order.

    Raises:
        ConfigError: no rows.

    Example:
        >>> quant_record(run_ptq(config).to_dict())["rows"]["ptq"]["ap"]
    """
    rows = _rows(results)
    picked = {key: {f: rows[key][f] for f in RECORD_FIELDS if f in rows[key]} for key in sorted(rows, key=_sort_key)}
    return {"version": RECORD_VERSION, "rows": picked}


def write_record(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write :func:`quant_record` of ``results`` to ``path`` (JSON, atomically); returns the path."""
    path = Path(path)
    atomic_write_text(path, json.dumps(quant_record(results), indent=1, default=str) + "\n")
    return path
