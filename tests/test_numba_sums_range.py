"""The compiled penalty sums add up in float64, also for a float32 buffer
(sk_softreg._numba_loops.abs_and_square_sums)."""

import pytest
import torch

from sk_softreg import _numba_loops

pytest.importorskip("numba")


def test_squares_of_a_float32_buffer_neither_overflow_nor_underflow():
    # w² of these float32 values is out of float32's range (inf, 0), not of float64's
    weights = torch.tensor([3e20, -1e-30, 0.0, 2.0], dtype=torch.float32)
    if not _numba_loops.applies(weights):
        pytest.skip("numba's compiled loops are unavailable (NUMBA_DISABLE_JIT=1)")
    sum_abs, sum_squares = _numba_loops.abs_and_square_sums(weights)
    expected = weights.double()
    assert sum_abs == pytest.approx(float(expected.abs().sum()), rel=1e-12)
    assert sum_squares == pytest.approx(float(expected.square().sum()), rel=1e-12)

    tiny = torch.tensor([1e-30, -1e-30], dtype=torch.float32)
    assert _numba_loops.abs_and_square_sums(tiny)[1] == pytest.approx(
        float(tiny.double().square().sum()), rel=1e-12)
    assert _numba_loops.abs_and_square_sums(tiny)[1] > 0
