"""A markdown table from a header and rows of cells: the quantization report and the benchmark records use it."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["markdown_table"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], aligns: Sequence[str] | None = None) -> str:
    """The table as lines joined by newlines (no trailing newline).

    Args:
        header: the column titles.
        rows: one sequence of cell strings per row, as many as ``header``.
        aligns: one ``---`` (left) or ``---:`` (right) per column; default: the first column left, the rest right.

    Example:
        >>> print(markdown_table(["model", "AP"], [["FP32", "0.84"]]))
        | model | AP |
        |---|---:|
        | FP32 | 0.84 |
    """
    aligns = list(aligns) if aligns is not None else ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])
