from __future__ import annotations

import pytest
import torch

from yolodeploy.core.compare import compare_outputs


def test_identical_outputs_pass_with_zero_error():
    x = torch.randn(4, 5)
    result = compare_outputs(x, x.clone(), atol=0, rtol=0)
    assert result and result.max_abs_error == 0 and result.max_rel_error == 0


def test_statistics_on_a_known_difference():
    ref = torch.tensor([1.0, -2.0, 4.0, 0.0])
    test = ref + torch.tensor([0.0, 0.0, 0.5, 0.0])
    result = compare_outputs(ref, test, atol=0.1, rtol=0.0)
    assert not result
    assert result.max_abs_error == pytest.approx(0.5)
    assert result.mean_abs_error == pytest.approx(0.125)
    assert result.max_rel_error == pytest.approx(0.5 / 4.0)
    assert compare_outputs(ref, test, atol=0.0, rtol=0.125)  # 0.5 <= 0.125 * 4


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape mismatch"):
        compare_outputs(torch.zeros(2), torch.zeros(3))
