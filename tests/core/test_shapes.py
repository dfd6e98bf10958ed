"""core.shapes: in eager mode the helpers equal the tensor methods they replace, empty batches included."""

from __future__ import annotations

import pytest
import torch

from yolodeploy.core.shapes import batch_dim, flatten_spatial, halves, static_size


@pytest.mark.parametrize("batch", [0, 1, 3])
def test_flatten_spatial_equals_flatten(batch):
    x = torch.randn(batch, 5, 4, 6)
    assert static_size(x) == (4, 6) and batch_dim(x) == batch
    assert torch.equal(flatten_spatial(x), x.flatten(2))


@pytest.mark.parametrize("channels", [2, 7, 64])
def test_halves_equal_chunk(channels):
    x = torch.randn(2, channels, 3, 3)
    for dim in (1, -3):
        got, want = halves(x, dim), x.chunk(2, dim)
        assert len(got) == len(want) == 2 and all(torch.equal(a, b) for a, b in zip(got, want))


def test_batch_dim_is_inferred_under_onnx_export(monkeypatch):
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    assert batch_dim(torch.zeros(3, 1)) == -1
