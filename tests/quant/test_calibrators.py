"""Calibrators on known distributions, the histogram's range growth, and the method dispatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolodeploy.errors import ConfigError
from yolodeploy.quant.calibrators import (
    CalibMethod,
    Histogram,
    compute_amax,
    entropy_amax,
    max_amax,
    mse_amax,
    per_channel_amax,
    percentile_amax,
)
from yolodeploy.quant.primitives import fake_quantize


def _histogram(*batches: torch.Tensor, num_bins: int = 2048) -> Histogram:
    hist = Histogram(num_bins)
    for batch in batches:
        hist.collect(batch)
    return hist


@pytest.fixture(scope="module")
def uniform_with_outlier() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.rand(100_000, generator=g) * 2 - 1, torch.tensor([100.0])])


@pytest.fixture(scope="module")
def gaussian() -> torch.Tensor:
    return torch.randn(200_000, generator=torch.Generator().manual_seed(1))


def _data_mse(x: torch.Tensor, amax: float) -> float:
    return float(((fake_quantize(x, amax) - x) ** 2).mean())


def test_outlier_max_and_percentile(uniform_with_outlier):
    hist = _histogram(uniform_with_outlier)
    assert max_amax(hist) == 100.0
    width = 100 / 2048
    for percentile in (99.9, 99.99, 99.999):  # the outlier is 1e-5 of the data: all percentiles see the bulk
        assert 0.99 <= percentile_amax(hist, percentile) <= 1.0 + width


def test_outlier_entropy_and_mse_ignore_it(uniform_with_outlier):
    hist = _histogram(uniform_with_outlier)
    # entropy: the smallest candidate is 128 of 2048 bins (6.25); the search must not be ruled out by the
    # outlier (unsmoothed KL is infinite for every candidate below it and returns 100)
    assert 1.0 <= entropy_amax(hist) < 10.0
    # mse: clipping one value at 100 costs (100 - a)^2, rounding 1e5 values costs 1e5 (a/127)^2/12: the optimum
    # is well below the outlier but not at the bulk; it matches a brute-force search on the raw data
    amax = mse_amax(hist)
    assert 20.0 < amax < 80.0
    grid = np.linspace(1.0, 100.0, 45)
    best = min(_data_mse(uniform_with_outlier, a) for a in grid)
    assert _data_mse(uniform_with_outlier, amax) <= 1.02 * best


def test_gaussian_ranges(gaussian):
    hist = _histogram(gaussian)
    assert 2.5 <= entropy_amax(hist) <= 4.5
    assert 2.5 <= mse_amax(hist) <= 4.5
    assert percentile_amax(hist, 99.99) == pytest.approx(3.89, abs=0.2)  # two-sided 1e-4 tail of N(0, 1)
    assert max_amax(hist) == float(gaussian.abs().max())


def test_mse_matches_brute_force_on_gaussian(gaussian):
    x = gaussian[:20_000]
    amax = mse_amax(_histogram(x))
    best = min(_data_mse(x, a) for a in np.linspace(2.0, float(x.abs().max()), 40))
    assert _data_mse(x, amax) <= 1.02 * best


def test_uniform_histogram_keeps_the_full_range():
    counts, edges = np.full(1024, 10.0), np.linspace(0, 1, 1025)
    hist = Histogram.from_counts(counts, edges)
    assert entropy_amax(hist) == 1.0  # every clipped candidate diverges; the full range has KL 0
    assert mse_amax(hist) >= 0.99  # clipping error outweighs rounding error for a flat density
    assert percentile_amax(hist, 50.0) == pytest.approx(0.5)


def test_entropy_few_bins_and_no_mutation():
    counts, edges = np.array([1000.0, 5, 4, 0, 1]), np.arange(6.0)
    hist = Histogram.from_counts(counts, edges)
    assert entropy_amax(hist) == 5.0  # <= 128 bins: lossless at this resolution, so the max edge
    relu_like = np.r_[1e6, np.full(300, 10.0), np.zeros(100), 1.0]
    hist = Histogram.from_counts(relu_like, np.arange(len(relu_like) + 1.0))
    entropy_amax(hist)
    assert hist.counts[0] == 1e6  # bin 0 replaced on a copy only


def test_histogram_growth_matches_one_batch():
    g = torch.Generator().manual_seed(2)
    small, large = torch.rand(50_000, generator=g), 3 * torch.rand(50_000, generator=g)
    combined = _histogram(torch.cat([small, large]))
    large_first = _histogram(large, small)  # no growth: identical to one combined batch
    assert np.array_equal(large_first.counts, combined.counts) and large_first.width == combined.width
    grown = _histogram(small, large)  # grows by an integer factor, merging bins exactly
    assert grown.amax == combined.amax and grown.counts.sum() == 100_000 == grown.num_values
    assert combined.width <= grown.width < 2 * combined.width
    for method in ("percentile", "mse", "entropy"):
        assert compute_amax(grown, method) == pytest.approx(compute_amax(combined, method), abs=3 * grown.width)


def test_histogram_zero_batches_then_data():
    zeros = _histogram(torch.zeros(10))
    assert all(compute_amax(zeros, method.value) == 0.0 for method in CalibMethod)  # a dead activation
    zeros.collect(torch.tensor([0.0, 1.0]))
    assert zeros.num_values == 12 and zeros.counts[0] == 11 and zeros.amax == 1.0


def test_bad_inputs():
    with pytest.raises(ConfigError, match="max, percentile, entropy, mse"):
        CalibMethod.parse("kl")
    with pytest.raises(ConfigError, match="empty"):
        compute_amax(Histogram(), "max")
    with pytest.raises(ConfigError, match="NaN"):
        Histogram().collect(torch.tensor([1.0, float("nan")]))
    hist = _histogram(torch.rand(100))
    with pytest.raises(ConfigError, match="percentile"):
        percentile_amax(hist, 0.0)
    with pytest.raises(ConfigError, match="unknown calibration method"):
        compute_amax(hist, "bogus")
    with pytest.raises(ConfigError, match="edges"):
        Histogram.from_counts([1, 2], [0.5, 1.0, 1.5])


def test_compute_amax_dispatch_and_per_channel_amax():
    hist = _histogram(torch.linspace(-2, 2, 1001))
    assert compute_amax(hist, CalibMethod.MAX) == compute_amax(hist, "max") == 2.0
    assert compute_amax(hist, "percentile", percentile=50.0) == pytest.approx(1.0, abs=2 / 2048)
    weight = torch.tensor([[[[1.0, -3.0]]], [[[0.5, 0.25]]], [[[0.0, 0.0]]]])
    assert per_channel_amax(weight).tolist() == [3.0, 0.5, 0.0]
    assert per_channel_amax(weight, axis=3).tolist() == [1.0, 3.0]


@pytest.mark.parametrize("num_bits", [4, 6])
def test_unsigned_search_is_the_signed_search_with_one_more_bit(num_bits):
    # unsigned b bits has 2**b - 1 steps on 0..amax, exactly the magnitudes of signed b + 1 bits
    data = torch.randn(50_000, generator=torch.Generator().manual_seed(2)).relu()
    hist = _histogram(data)
    assert entropy_amax(hist, num_bits, unsigned=True) == entropy_amax(hist, num_bits + 1)
    assert mse_amax(hist, num_bits, unsigned=True) == mse_amax(hist, num_bits + 1)
    assert compute_amax(hist, "mse", num_bits=num_bits, unsigned=True) == mse_amax(hist, num_bits + 1)


def test_unsigned_mse_clips_less(gaussian):
    # twice the levels make rounding cheaper relative to clipping, so the optimum moves out (|N(0,1)|: 3.97 -> 4.23)
    hist = _histogram(gaussian.abs())
    signed, unsigned = mse_amax(hist), mse_amax(hist, unsigned=True)
    assert unsigned > signed and unsigned <= hist.amax
