"""Primitives against hand-computed qparams, codes and error metrics."""

from __future__ import annotations

import math

import pytest
import torch

from yolodeploy.errors import ConfigError
from yolodeploy.quant.primitives import (
    MIN_SCALE,
    dequantize,
    fake_quantize,
    fake_quantize_scaled,
    learnable_fake_quantize,
    quant_error_stats,
    quantize,
    symmetric_scale,
    unsigned_qrange,
)


def test_symmetric_scale_hand_values():
    torch.testing.assert_close(symmetric_scale(1.27), torch.tensor(0.01))
    torch.testing.assert_close(symmetric_scale(torch.tensor([127.0, 63.5])), torch.tensor([1.0, 0.5]))
    assert symmetric_scale(7.0, num_bits=4).item() == 1.0  # 4-bit: amax / 7
    assert symmetric_scale(0.0).item() == pytest.approx(MIN_SCALE) and symmetric_scale(0.0).item() > 0


@pytest.mark.parametrize("num_bits", [1, 9, 8.0])
def test_bad_num_bits(num_bits):
    with pytest.raises(ConfigError, match="num_bits"):
        symmetric_scale(1.0, num_bits=num_bits)


def test_quantize_rounds_half_to_even_and_clamps_full_range():
    # scale 0.5 makes x / scale exact, so these are true ties
    x = torch.tensor([0.25, 0.75, 1.25, -0.25, -0.75, 63.5, 64.0, -64.0, -100.0])
    expected = torch.tensor([0, 2, 2, 0, -2, 127, 127, -128, -128], dtype=torch.int8)
    assert torch.equal(quantize(x, 0.5), expected)
    scale = symmetric_scale(1.27)
    assert quantize(torch.tensor([0.004, 0.016, 5.0, -5.0]), scale).tolist() == [0, 2, 127, -128]
    torch.testing.assert_close(
        dequantize(torch.tensor([-128, 127], dtype=torch.int8), scale), torch.tensor([-1.28, 1.27])
    )


def test_per_channel_quantize_dequantize():
    x = torch.tensor([[1.0, -2.0], [1.0, -2.0]])
    q = quantize(x, torch.tensor([1.0, 0.5]), axis=0)
    assert q.tolist() == [[1, -2], [2, -4]]
    assert quantize(x, torch.tensor([1.0, 0.5]), axis=1).tolist() == [[1, -4], [1, -4]]
    torch.testing.assert_close(dequantize(q, torch.tensor([1.0, 0.5]), axis=0), x)


def test_fake_quantize_equals_quantize_dequantize():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5) * 3
    amax = 127 * 2.0**-5  # scale 2^-5: division and torch's reciprocal multiply agree exactly
    assert torch.equal(fake_quantize(x, amax), dequantize(quantize(x, 2.0**-5), 2.0**-5))
    amax_c = torch.tensor([127 * 2.0**-5, 127 * 2.0**-3, 127 * 2.0**-7, 0.0])
    scale_c = symmetric_scale(amax_c)
    expected = dequantize(quantize(x, scale_c, axis=0), scale_c, axis=0)
    assert torch.equal(fake_quantize(x, amax_c, axis=0), expected)
    # amax 0 (a dead channel): a tiny positive scale, so anything is clipped to about zero, never NaN
    assert fake_quantize(x, amax_c, axis=0)[3].abs().max() <= 128 * MIN_SCALE


def test_unsigned_fake_quantize_hand_values():
    assert unsigned_qrange() == (0, 255) and unsigned_qrange(4) == (0, 15)
    # scale 0.5: round(x / 0.5) clamped to 0..255, times 0.5 (no ties among these values)
    x = torch.tensor([-3.0, -0.1, 0.0, 0.2, 0.3, 1.26, 127.4, 127.5, 200.0])
    codes = torch.tensor([0, 0, 0, 0, 1, 3, 255, 255, 255])  # negatives -> 0, overflow -> 255
    assert torch.equal(fake_quantize_scaled(x, torch.tensor(0.5), unsigned=True), codes * 0.5)
    # the same scale signed: -128..127, so 1.26 -> 1.5 but 127.4 -> 63.5 and -3 -> -3
    signed = fake_quantize_scaled(x, torch.tensor(0.5))
    assert signed.tolist() == [-3.0, -0.0, 0.0, 0.0, 0.5, 1.5, 63.5, 63.5, 63.5]
    # 4 bits unsigned: 0..15
    assert fake_quantize_scaled(torch.tensor([9.0, -1.0]), torch.tensor(0.5), num_bits=4, unsigned=True).tolist() == [
        7.5,
        0.0,
    ]


def test_fake_quantize_straight_through_gradient():
    x = torch.tensor([0.3, -0.9, 5.0, -5.0], requires_grad=True)
    fake_quantize(x, 1.27).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize(("axis", "unsigned"), [(None, False), (None, True), (1, False)])
def test_learnable_fake_quantize_forward_equals_torch_op(axis, unsigned):
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 3
    scale = torch.tensor(0.02) if axis is None else torch.tensor([0.01, 0.03, 0.05])
    expected = fake_quantize_scaled(x, scale, axis, unsigned=unsigned)
    torch.testing.assert_close(learnable_fake_quantize(x, scale, axis, unsigned=unsigned), expected, atol=1e-7, rtol=0)


def test_learnable_fake_quantize_lsq_gradients_hand_values():
    # scale 0.1, int8: 0.26 -> code 2.6 rounds to 3 (inside); 20.0 -> 200 clips to 127; -20.0 clips to -128
    x = torch.tensor([0.26, 20.0, -20.0], requires_grad=True)
    scale = torch.tensor(0.1, requires_grad=True)
    learnable_fake_quantize(x, scale).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 0.0]  # straight through inside the range, zero where clipped
    # d/ds: round(x/s) - x/s inside (3 - 2.6), the clipped code outside (127, -128)
    assert float(scale.grad) == pytest.approx(0.4 + 127 - 128, abs=1e-4)


def test_quant_error_stats_hand_values():
    stats = quant_error_stats(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.5]))
    assert stats["mse"] == pytest.approx(0.125)
    assert stats["snr_db"] == pytest.approx(20.0)  # 10 log10(25 / 0.25)
    assert stats["cosine"] == pytest.approx((9 + 18) / (5 * math.sqrt(9 + 20.25)))
    assert stats["max_abs"] == pytest.approx(0.5)


def test_quant_error_stats_flattens_batches_and_edge_cases():
    torch.manual_seed(0)
    ref, test = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert quant_error_stats(ref, test) == quant_error_stats(ref.reshape(-1), test.reshape(-1))
    same = quant_error_stats(ref, ref.clone())
    assert same["mse"] == 0 and same["snr_db"] == math.inf and same["cosine"] == pytest.approx(1.0)
    assert quant_error_stats(torch.zeros(3), torch.zeros(3))["cosine"] == 1.0
    assert quant_error_stats(torch.zeros(3), torch.ones(3))["cosine"] == 0.0
    with pytest.raises(ConfigError):
        quant_error_stats(torch.zeros(3), torch.zeros(4))
