"""The compiled loops over the flat buffer (sk_softreg._fused, numba where installed).

They are a speed device only: the soft-threshold must give the weights that
torch's kernels give fed a correctly rounded square root, bit for bit (torch's
CPU sqrt is not always correctly rounded), the sums torch's values up to
rounding, and the classifier's cross-entropy plus KL the value and gradient of
torch's composite up to rounding.
Where numba is missing the tests skip, and the fits keep torch's kernels
(covered by test_flat_weights.py).
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skorch.callbacks import Callback

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor, _fused
from sk_softreg.penalties import (
    adam_threshold_coefficients,
    kl_from_uniform,
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
    _fused.soft_threshold_scaled_(got, moments, scale, shift)

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_soft_threshold_returns_the_sums_of_the_weights_it_leaves(dtype):
    weights, moments = _buffers(dtype)
    before = _fused.abs_and_square_sums(weights)
    sums = _fused.soft_threshold_scaled_(weights, moments, 2e-3, 1e-9)
    after = _fused.abs_and_square_sums(weights)
    # the same additions in the same order: a batch that reuses them reports what a
    # pass of its own would
    assert sums == after
    assert sums[0] < 0.9 * before[0]  # the step changed the weights: the sums are new


def test_soft_threshold_keeps_nan_weights_nan():
    weights, moments = _buffers(torch.float32, n=64)
    weights[10] = float("nan")
    _fused.soft_threshold_scaled_(weights, moments, 1e-6, 1e-9)
    assert torch.isnan(weights[10]) and int(torch.isnan(weights).sum()) == 1


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_sums_are_torchs_values_up_to_rounding(dtype, rtol):
    weights, _ = _buffers(dtype)
    sum_abs, sum_squares = _fused.abs_and_square_sums(weights)
    assert type(sum_abs) is type(sum_squares) is float
    assert sum_abs == pytest.approx(float(l1_penalty([weights])), rel=rtol, abs=0)
    assert sum_squares == pytest.approx(float(l2_penalty([weights])), rel=rtol, abs=0)


def test_applies_only_where_the_loops_can_work():
    weights = torch.zeros(8)
    assert _fused.applies(weights) and _fused.applies(weights.double())
    assert not _fused.applies(weights.bfloat16())
    assert not _fused.applies(weights.half())
    assert not _fused.applies(torch.zeros(8, 2)[:, 0])  # not contiguous
    assert not _fused.applies(torch.zeros(2, 4))
    assert not _fused.applies(torch.zeros(8, requires_grad=True))
    assert not _fused.applies(torch.zeros(8, device="meta"))


def test_no_loops_without_numba_or_with_its_jit_disabled(monkeypatch, torch_kernels):
    assert not _fused.applies(torch.zeros(8))
    monkeypatch.setattr(_fused, "_kernels", None)
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    assert not _fused.applies(torch.zeros(8))


def test_loops_compile_in_memory_where_numba_cannot_cache(monkeypatch):
    njit = numba.njit

    def njit_without_cache_directory(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return njit(**options)

    monkeypatch.setattr(numba, "njit", njit_without_cache_directory)
    monkeypatch.setattr(_fused, "_kernels", None)
    weights, moments = _buffers(torch.float32, n=256)
    expected = weights.clone()
    prox_l1_([expected], [_correctly_rounded_thresholds(moments, 1e-6, 1e-9)])
    assert _fused.applies(weights)
    _fused.soft_threshold_scaled_(weights, moments, 1e-6, 1e-9)
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
    prox = _Counting(_fused.soft_threshold_scaled_)
    sums = _Counting(_fused.abs_and_square_sums)
    loss = _Counting(_fused.cross_entropy_with_kl)
    monkeypatch.setattr(_fused, "soft_threshold_scaled_", prox)
    monkeypatch.setattr(_fused, "abs_and_square_sums", sums)
    monkeypatch.setattr(_fused, "cross_entropy_with_kl", loss)
    compiled = cls(**FAST, **PENALTIES, **params).fit(X, y)
    steps = sum("train_loss" in batch for row in compiled.history for batch in row["batches"])
    assert prox.calls == steps  # every training step
    # each epoch's first batch but the fit's first (no buffer yet); every other
    # batch takes the sums that the proximal step before it returned
    assert sums.calls == FAST["max_epochs"] - 1
    # the classifier's loss, every training batch (the regressor has its own KL)
    assert loss.calls == (0 if cls is SoftRegRegressor else steps)

    monkeypatch.setattr(_fused, "_kernels", False)
    eager = cls(**FAST, **PENALTIES, **params).fit(X, y)
    if cls is not SoftRegRegressor:  # asked, but declined: torch's kernels computed it
        assert loss.calls == 2 * steps
    assert (prox.calls, sums.calls) == (steps, FAST["max_epochs"] - 1)  # none without the loops

    # rounding apart (the square root, the loss in float64), the same training:
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
# the classifier's cross-entropy plus KL in one node
def _composite(logits, target, alpha):
    """torch's kernels: the classifier's loss without the compiled node."""
    kl = kl_from_uniform(logits).mean()
    return F.cross_entropy(logits, target) + alpha * kl, kl


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 2.0])
def test_cross_entropy_with_kl_is_torchs_composite_up_to_rounding(dtype, rtol, alpha):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 10, generator=g, dtype=dtype) * 4).requires_grad_()
    target = torch.randint(0, 10, (64,), generator=g)
    loss, kl = _fused.cross_entropy_with_kl(logits, target, alpha)
    assert loss.dtype == dtype and loss.dim() == 0 and type(kl) is float
    (grad,) = torch.autograd.grad(loss, logits)
    expected, expected_kl = _composite(logits, target, alpha)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=rtol)
    assert kl == pytest.approx(float(expected_kl.detach()), rel=rtol)
    torch.testing.assert_close(grad, expected_grad, rtol=rtol, atol=rtol * 1e-3)


def test_cross_entropy_with_kl_adds_the_offset_to_the_value_only():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(16, 5, generator=g, dtype=torch.float64).requires_grad_()
    target = torch.randint(0, 5, (16,), generator=g)
    plain, kl = _fused.cross_entropy_with_kl(logits, target, 0.3)
    shifted, kl_shifted = _fused.cross_entropy_with_kl(logits, target, 0.3, offset=1.25)
    assert float(shifted.detach()) == pytest.approx(float(plain.detach()) + 1.25, rel=1e-15)
    assert kl_shifted == kl
    torch.testing.assert_close(
        torch.autograd.grad(shifted, logits)[0], torch.autograd.grad(plain, logits)[0],
        rtol=0, atol=0,
    )


def test_penalty_values_ride_in_the_compiled_loss_node(digits, monkeypatch):
    """With the flat buffer's sums (floats), the training loss is the one compiled node:
    no node of its own adds the λ terms, and its value still holds them."""
    X, y = digits[0][:128].reshape(-1, 1, 8, 8).astype(np.float32), digits[1][:128]
    losses = []
    get_loss = SoftRegCNNClassifier.get_loss

    def recording(self, y_pred, y_true, X=None, training=False):
        loss = get_loss(self, y_pred, y_true, X=X, training=training)
        if training:
            without, _ = _fused.cross_entropy_with_kl(y_pred, y_true, self.alpha)
            losses.append((type(loss.grad_fn).__name__, self._step_state.evaluations[-1],
                           float(without.detach())))
        return loss

    monkeypatch.setattr(SoftRegCNNClassifier, "get_loss", recording)
    SoftRegCNNClassifier(**FAST, **PENALTIES, module__channels=(4, 8),
                         module__hidden_units=16).fit(X, y)
    # the first batch has no flat buffer yet: its λ terms are tensors, added by a node
    assert losses[0][0] == "AddBackward0"
    assert {name for name, *_ in losses[1:]} == {"_CrossEntropyWithKLBackward"}
    for _, (loss, (l1, l2, _, _), _), data in losses[1:]:
        assert type(l1) is float and type(l2) is float and l1 > 0 and l2 > 0
        assert float(loss.detach()) == pytest.approx(data + l1 + l2, rel=1e-6)


def test_cross_entropy_with_kl_passes_gradcheck_and_scales_with_the_incoming_gradient():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, 1, 1, 2, 0, 3])
    assert torch.autograd.gradcheck(
        lambda z: _fused.cross_entropy_with_kl(z, target, 0.3)[0], (logits,)
    )
    (once,) = torch.autograd.grad(_fused.cross_entropy_with_kl(logits, target, 0.3)[0], logits)
    (scaled,) = torch.autograd.grad(
        -2.5 * _fused.cross_entropy_with_kl(logits, target, 0.3)[0], logits
    )
    torch.testing.assert_close(scaled, -2.5 * once)


def test_cross_entropy_with_kl_refuses_a_second_derivative():
    logits = torch.randn(5, 3, requires_grad=True)
    loss, _ = _fused.cross_entropy_with_kl(logits, torch.tensor([0, 1, 2, 0, 1]), 0.1)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(loss, logits, create_graph=True)


def test_cross_entropy_with_kl_of_nan_logits_is_nan():
    logits = torch.zeros(4, 3)
    logits[1, 2] = float("nan")
    loss, kl = _fused.cross_entropy_with_kl(logits, torch.tensor([0, 1, 2, 0]), 0.1)
    assert torch.isnan(loss) and np.isnan(kl)


@pytest.mark.parametrize(
    "logits, target, ignore_index",
    [
        (torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]), -100),  # target out of range
        (torch.zeros(4, 3), torch.tensor([0, -1, 2, 0]), -100),
        (torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), 1),  # a target to ignore
        (torch.zeros(4, 3), torch.tensor([0, 1, 2, 0], dtype=torch.int32), -100),
        (torch.zeros(4, 3), torch.tensor([0, 1, 2]), -100),  # lengths differ
        (torch.zeros(3, 4).T, torch.tensor([0, 1, 2, 0]), -100),  # not contiguous
        (torch.zeros(4, 3, 1), torch.tensor([0, 1, 2, 0]), -100),
        (torch.zeros(4, 3, dtype=torch.bfloat16), torch.tensor([0, 1, 2, 0]), -100),
        (torch.zeros(4, 3, device="meta"), torch.tensor([0, 1, 2, 0]), -100),
    ],
)
def test_cross_entropy_with_kl_declines_what_it_does_not_compute(logits, target, ignore_index):
    assert _fused.cross_entropy_with_kl(logits, target, 0.1, ignore_index=ignore_index) is None


def test_cross_entropy_with_kl_declines_without_numba(torch_kernels):
    assert _fused.cross_entropy_with_kl(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), 0.1) is None


@pytest.mark.parametrize(
    "params, used",
    [
        ({}, True),
        ({"kl": "confidence_penalty"}, False),
        ({"criterion__weight": torch.ones(10)}, False),
        ({"criterion__label_smoothing": 0.1}, False),
        ({"class_weight": "balanced"}, False),
        ({"alpha": 0.0}, False),
    ],
)
def test_classifier_takes_the_compiled_loss_only_for_plain_cross_entropy(
    digits, monkeypatch, params, used
):
    X, y = digits[0][:128].reshape(-1, 1, 8, 8).astype(np.float32), digits[1][:128]
    loss = _Counting(_fused.cross_entropy_with_kl)
    monkeypatch.setattr(_fused, "cross_entropy_with_kl", loss)
    kw = dict(FAST, **PENALTIES, module__channels=(4, 8), module__hidden_units=16)
    clf = SoftRegCNNClassifier(**{**kw, **params}).fit(X, y)
    steps = sum("train_loss" in batch for row in clf.history for batch in row["batches"])
    assert loss.calls == (steps if used else 0)


# ----------------------------------------------------------------------------
# a batch's penalty values from the proximal step before it
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


class _HalveWeightsInPlace(Callback):
    """Writes the weights in place after each batch (moves their version counters)."""

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if training:
            with torch.no_grad():
                for p in net._penalized_params():
                    p.mul_(0.5)


@pytest.mark.parametrize("callback", [None, _HalveWeightsThroughData(),
                                      _HalveWeightsThroughDataAtEpochEnd()],
                         ids=["default callbacks", "written through .data per batch",
                              "written through .data per epoch"])
def test_history_terms_are_those_of_the_weights_at_each_loss(digits, monkeypatch, callback):
    """train_l1 and train_l2 hold λ·Σ of the weights each training loss saw: also
    where a batch takes the sums the proximal step before it returned, and where a
    callback writes the weights between batches (then every batch adds them up) or
    between epochs (then each epoch's first batch does)."""
    X, y = _images(digits)
    sums = _Counting(_fused.abs_and_square_sums)
    monkeypatch.setattr(_fused, "abs_and_square_sums", sums)
    truth = _WeightsAtEachLoss(monkeypatch)
    callbacks = None if callback is None else [callback]
    net = SoftRegCNNClassifier(**FAST, **PENALTIES, **SMALL_CNN, callbacks=callbacks).fit(X, y)
    per_batch = isinstance(callback, _HalveWeightsThroughData)
    assert sums.calls == (len(truth.rows) if per_batch else FAST["max_epochs"]) - 1
    expected = truth.epoch_means()
    # rtol: the fit's first batch sums in float32 (torch's kernels, no buffer yet);
    # a batch's values one step stale are about 1e-2 off, halved weights 0.5-0.75
    np.testing.assert_allclose(net.history[:, "train_l1"], expected[:, 0], rtol=1e-6)
    np.testing.assert_allclose(net.history[:, "train_l2"], expected[:, 1], rtol=1e-6)


def test_a_write_in_place_between_batches_makes_the_next_batch_add_up_afresh(digits):
    """A hook outside the known ones stops the reuse for the fit; the version counters
    are the second guard: with the reuse forced on, an in-place write between two
    batches still gets its batch's values added up afresh."""
    X, y = _images(digits)

    class Forced(SoftRegCNNClassifier):
        def on_train_begin(self, net, X=None, y=None, **kwargs):
            super().on_train_begin(net, X=X, y=y, **kwargs)
            self._step_state.reuse_values = True

    params = dict(**FAST, **PENALTIES, **SMALL_CNN)
    forced = Forced(**params, callbacks=[_HalveWeightsInPlace()]).fit(X, y)
    plain = SoftRegCNNClassifier(**params, callbacks=[_HalveWeightsInPlace()]).fit(X, y)
    assert not plain._step_state.reuse_values
    for key in ("train_loss", "train_l1", "train_l2"):
        np.testing.assert_allclose(forced.history[:, key], plain.history[:, key], rtol=1e-12)


def test_reusing_the_sums_changes_no_weight(digits):
    """The same fit with the reuse and without it (an unknown batch hook, which does
    nothing): bit-identical weights and the same loss."""
    X, y = _images(digits)

    class Idle(Callback):
        def on_batch_end(self, net, **kwargs):
            pass

    params = dict(**FAST, **PENALTIES, **SMALL_CNN)
    reused = SoftRegCNNClassifier(**params).fit(X, y)
    fresh = SoftRegCNNClassifier(**params, callbacks=[Idle()]).fit(X, y)
    assert reused._step_state.reuse_values and not fresh._step_state.reuse_values
    for a, b in zip(reused.module_.parameters(), fresh.module_.parameters()):
        assert torch.equal(a, b)
    np.testing.assert_allclose(
        reused.history[:, "train_loss"], fresh.history[:, "train_loss"], rtol=1e-12
    )
