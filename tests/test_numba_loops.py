"""The compiled loops over the flat buffer (sk_softreg._numba_loops, numba where installed).

They are a speed device only: the soft-threshold must give the weights that
torch's kernels give fed a correctly rounded square root, bit for bit (torch's
CPU sqrt is not always correctly rounded), and the sums torch's values up to
rounding.
Where numba is missing the tests skip, and the fits keep torch's kernels
(covered by test_flat_weights.py).
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor, _numba_loops
from sk_softreg.penalties import (
    adam_threshold_coefficients,
    l1_penalty,
    l2_penalty,
    prox_l1_,
    thresholds_from_moments,
)

numba = pytest.importorskip("numba")

ADAM_GROUP = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}
FAST = dict(max_epochs=2, batch_size=32, random_state=0, device="cpu")
PENALTIES = dict(lambda1=1e-3, lambda2=1e-3, alpha=0.1)
SMALL_CNN = dict(module__channels=(4, 8), module__hidden_units=16)


def _bits(t):
    return t.view(torch.int32 if t.element_size() == 4 else torch.int64)


def _buffers(dtype, n=20_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    weights = torch.randn(n, generator=g, dtype=dtype) * 0.05
    moments = torch.rand(n, generator=g, dtype=dtype) * 1e-4
    # a zero moment (the largest threshold), an infinite one (threshold 0), a tiny one
    moments[:3] = torch.tensor([0.0, float("inf"), 1e-30], dtype=dtype)
    return weights, moments


def _correctly_rounded_thresholds(moments, scale, shift):
    """thresholds_from_moments's kernels after numpy's (correctly rounded) sqrt."""
    thresholds = [torch.from_numpy(np.sqrt(moments.numpy()))]
    torch._foreach_add_(thresholds, [shift])
    torch._foreach_reciprocal_(thresholds)
    torch._foreach_mul_(thresholds, [scale])
    return thresholds[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("step", [1, 50])
def test_soft_threshold_is_torchs_with_a_correctly_rounded_sqrt(dtype, step):
    weights, moments = _buffers(dtype)
    scale, shift = adam_threshold_coefficients(ADAM_GROUP, step, 0.3)
    thresholds = _correctly_rounded_thresholds(moments, scale, shift)
    # weights exactly at the threshold, just inside and just outside it, and -0.0
    weights[3:7] = thresholds[3:7] * torch.tensor([1, -1, 1, -1], dtype=dtype)
    weights[7] = torch.nextafter(thresholds[7], torch.zeros((), dtype=dtype))
    weights[8] = -torch.nextafter(thresholds[8], torch.full((), 1.0, dtype=dtype))
    weights[9] = -0.0
    expected = weights.clone()
    prox_l1_([expected], [thresholds])

    got = weights.clone()
    _numba_loops.soft_threshold_scaled_(got, moments, scale, shift)

    assert torch.equal(_bits(got), _bits(expected))
    assert 0 < int((got == 0).sum()) < len(got)  # some coordinates zeroed, not all
    assert torch.equal(got[:7] == 0, expected[:7] == 0)

    # with torch's own sqrt kernel a threshold moves by at most a few units in
    # the last place, and a weight by that plus the rounding of w - t
    eager = weights.clone()
    torchs = thresholds_from_moments([moments], [(scale, shift)])[0]
    prox_l1_([eager], [torchs])
    bound = 4 * torch.finfo(dtype).eps * (torchs + weights.abs())
    assert torch.all((got - eager).abs() <= bound)


def test_soft_threshold_keeps_nan_weights_nan():
    weights, moments = _buffers(torch.float32, n=64)
    weights[10] = float("nan")
    _numba_loops.soft_threshold_scaled_(weights, moments, 1e-6, 1e-9)
    assert torch.isnan(weights[10]) and int(torch.isnan(weights).sum()) == 1


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_sums_are_torchs_values_up_to_rounding(dtype, rtol):
    weights, _ = _buffers(dtype)
    sum_abs, sum_squares = _numba_loops.abs_and_square_sums(weights)
    assert type(sum_abs) is type(sum_squares) is float
    assert sum_abs == pytest.approx(float(l1_penalty([weights])), rel=rtol, abs=0)
    assert sum_squares == pytest.approx(float(l2_penalty([weights])), rel=rtol, abs=0)


def test_applies_only_where_the_loops_can_work():
    weights = torch.zeros(8)
    assert _numba_loops.applies(weights) and _numba_loops.applies(weights.double())
    assert not _numba_loops.applies(weights.bfloat16())
    assert not _numba_loops.applies(weights.half())
    assert not _numba_loops.applies(torch.zeros(8, 2)[:, 0])  # not contiguous
    assert not _numba_loops.applies(torch.zeros(2, 4))
    assert not _numba_loops.applies(torch.zeros(8, requires_grad=True))
    assert not _numba_loops.applies(torch.zeros(8, device="meta"))


def test_no_loops_without_numba_or_with_its_jit_disabled(monkeypatch, torch_kernels):
    assert not _numba_loops.applies(torch.zeros(8))
    monkeypatch.setattr(_numba_loops, "_kernels", None)
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    assert not _numba_loops.applies(torch.zeros(8))


def test_loops_compile_in_memory_where_numba_cannot_cache(monkeypatch):
    njit = numba.njit

    def njit_without_cache_directory(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return njit(**options)

    monkeypatch.setattr(numba, "njit", njit_without_cache_directory)
    monkeypatch.setattr(_numba_loops, "_kernels", None)
    weights, moments = _buffers(torch.float32, n=256)
    expected = weights.clone()
    prox_l1_([expected], [_correctly_rounded_thresholds(moments, 1e-6, 1e-9)])
    assert _numba_loops.applies(weights)
    _numba_loops.soft_threshold_scaled_(weights, moments, 1e-6, 1e-9)
    assert torch.equal(weights, expected)


class _Counting:
    """Counts calls of a function it wraps."""

    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


CASES = {
    "CNN, Adam": (SoftRegCNNClassifier, dict(module__channels=(4, 8), module__hidden_units=16)),
    "CNN, AdamW amsgrad": (
        SoftRegCNNClassifier,
        dict(module__channels=(4, 8), module__hidden_units=16,
             optimizer=torch.optim.AdamW, optimizer__amsgrad=True),
    ),
    "regressor": (SoftRegRegressor, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fit_with_the_loops_trains_torchs_weights_up_to_rounding(
    case, digits, regression_data, monkeypatch
):
    cls, params = CASES[case]
    if cls is SoftRegRegressor:
        X, y = regression_data
    else:
        X, y = digits[0][:256].reshape(-1, 1, 8, 8).astype(np.float32), digits[1][:256]
    prox = _Counting(_numba_loops.soft_threshold_scaled_)
    sums = _Counting(_numba_loops.abs_and_square_sums)
    monkeypatch.setattr(_numba_loops, "soft_threshold_scaled_", prox)
    monkeypatch.setattr(_numba_loops, "abs_and_square_sums", sums)
    compiled = cls(**FAST, **PENALTIES, **params).fit(X, y)
    steps = sum("train_loss" in batch for row in compiled.history for batch in row["batches"])
    assert prox.calls == steps  # every training step
    assert sums.calls == steps - 1  # every batch but the fit's first (no buffer yet)

    monkeypatch.setattr(_numba_loops, "_kernels", False)
    eager = cls(**FAST, **PENALTIES, **params).fit(X, y)
    assert (prox.calls, sums.calls) == (steps, steps - 1)  # none without the loops

    # rounding apart (the square root, the sums in float64), the same training:
    # measured, the weights part by under 2e-7 after these 2 epochs
    for (name, a), b in zip(compiled.module_.named_parameters(), eager.module_.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-6, msg=name)
    for key in ("train_loss", "train_l1", "train_l2", "train_kl"):
        np.testing.assert_allclose(
            compiled.history[:, key], eager.history[:, key], rtol=1e-4, err_msg=key
        )


def test_importing_sk_softreg_leaves_numba_unimported():
    """numba is imported at the first penalized CPU fit, not with the package."""
    code = "import sys, sk_softreg; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------
# the history's penalty values
def _images(digits, n=256):
    return digits[0][:n].reshape(-1, 1, 8, 8).astype(np.float32), digits[1][:n]


class _WeightsAtEachLoss:
    """Records, at each training loss, λ1·Σ|w| and λ2·Σw² of the weights as they are,
    in torch's float64 kernels."""

    def __init__(self, monkeypatch):
        self.rows = []
        get_loss = SoftRegCNNClassifier.get_loss
        rows = self.rows

        def recording(net, y_pred, y_true, X=None, training=False):
            if training:
                params = [p.detach().double() for p in net._penalized_params()]
                rows.append((len(net.history), net.lambda1 * float(l1_penalty(params)),
                             net.lambda2 * float(l2_penalty(params)), len(y_pred)))
            return get_loss(net, y_pred, y_true, X=X, training=training)

        monkeypatch.setattr(SoftRegCNNClassifier, "get_loss", recording)

    def epoch_means(self):
        rows = np.array(self.rows)
        means = []
        for epoch in np.unique(rows[:, 0]):
            r = rows[rows[:, 0] == epoch]
            means.append((r[:, 1] @ r[:, 3] / r[:, 3].sum(), r[:, 2] @ r[:, 3] / r[:, 3].sum()))
        return np.array(means)


class _HalveWeightsThroughData(Callback):
    """Writes the weights through ``param.data`` after each batch: no version counter moves."""

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if training:
            for p in net._penalized_params():
                p.data.mul_(0.5)


class _HalveWeightsThroughDataAtEpochEnd(Callback):
    """Writes the weights through ``param.data`` at the end of each epoch."""

    def on_epoch_end(self, net, **kwargs):
        for p in net._penalized_params():
            p.data.mul_(0.5)


@pytest.mark.parametrize("callback", [None, _HalveWeightsThroughData(),
                                      _HalveWeightsThroughDataAtEpochEnd()],
                         ids=["default callbacks", "written through .data per batch",
                              "written through .data per epoch"])
def test_history_terms_are_those_of_the_weights_at_each_loss(digits, monkeypatch, callback):
    """train_l1 and train_l2 hold λ·Σ of the weights each training loss saw, also
    where a callback writes the weights between batches or between epochs."""
    X, y = _images(digits)
    sums = _Counting(_numba_loops.abs_and_square_sums)
    monkeypatch.setattr(_numba_loops, "abs_and_square_sums", sums)
    truth = _WeightsAtEachLoss(monkeypatch)
    callbacks = None if callback is None else [callback]
    net = SoftRegCNNClassifier(**FAST, **PENALTIES, **SMALL_CNN, callbacks=callbacks).fit(X, y)
    assert sums.calls == len(truth.rows) - 1  # every batch but the first (no buffer yet)
    expected = truth.epoch_means()
    # rtol: the fit's first batch sums in float32 (torch's kernels, no buffer yet);
    # a batch's values one step stale are about 1e-2 off, halved weights 0.5-0.75
    np.testing.assert_allclose(net.history[:, "train_l1"], expected[:, 0], rtol=1e-6)
    np.testing.assert_allclose(net.history[:, "train_l2"], expected[:, 1], rtol=1e-6)


