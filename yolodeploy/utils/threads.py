"""torch's intra-op thread count, set for a block and restored afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (``None``: unchanged), then restore the previous count.

    The count is process-wide. Loops of many tiny tensor ops (the reference NMS) want one thread: with more, each
    op can wait on a thread-pool barrier, and on a loaded machine that made NMS 7-30x slower (measured here).
    """
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    if previous == threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
