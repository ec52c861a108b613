"""The Accelerate variants on CPU, where Accelerate runs a single process."""

import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_diabetes
from skorch.callbacks import Callback

accelerate = pytest.importorskip(
    "accelerate",
    reason="accelerate is not installed; install the extra: pip install 'sk-softreg[accelerate]'",
)
from accelerate import Accelerator

import sk_softreg._engine as engine
from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor
from sk_softreg.accelerate import (
    AcceleratedSoftRegCNNClassifier,
    AcceleratedSoftRegRegressor,
)

SMALL = {
    "max_epochs": 2,
    "batch_size": 32,
    "module__channels": (4, 8),
    "module__hidden_units": 16,
    "random_state": 0,
}


def _accelerator(steps=1):
    # Accelerate keeps the accumulation setting in process-wide state: the
    # newest Accelerator wins, so build it right before the fit that uses it.
    return Accelerator(cpu=True, gradient_accumulation_steps=steps)


@pytest.mark.parametrize("lambda2", [0.0, 1e-4])
def test_matches_plain_classifier_without_accumulation(digits200, lambda2):
    X, y = digits200
    kw = dict(SMALL, lambda1=1e-3, lambda2=lambda2, alpha=0.1)
    plain = SoftRegCNNClassifier(device="cpu", **kw).fit(X, y)
    acc = AcceleratedSoftRegCNNClassifier(accelerator=_accelerator(), **kw).fit(X, y)
    assert acc.get_params()["device"] is None
    assert all(v > 0 for v in acc.history[:, "train_l1"])
    # The same objective and steps, computed in part by other kernels: the plain
    # CPU fit takes the correctly rounded square root in the compiled proximal
    # step (sk_softreg._numba_loops) and adds the λ2 gradient 2·λ2·w after backward;
    # the Accelerate variant keeps torch's kernels and backpropagates λ2·Σw² (loss
    # scaling and gradient accumulation need it in the loss). So the two agree
    # up to rounding.
    for key in ("train_loss", "train_l1", "train_l2", "train_kl"):
        assert acc.history[:, key] == pytest.approx(plain.history[:, key], rel=1e-5)
    np.testing.assert_allclose(acc.predict_proba(X), plain.predict_proba(X), atol=1e-5)
    assert acc.sparsity_ == pytest.approx(plain.sparsity_, abs=0.005)
    np.testing.assert_array_equal(acc.predict(X[:5]), plain.predict(X[:5]))


def test_proximal_step_gives_exact_zeros(digits200):
    X, y = digits200
    acc = AcceleratedSoftRegCNNClassifier(accelerator=_accelerator(), lambda1=0.05, **SMALL).fit(
        X, y
    )
    assert acc.sparsity_ > 0.5
    weights = [p for p in acc.module_.parameters() if p.ndim > 1]
    assert sum(int((p == 0).sum()) for p in weights) > 0


@pytest.mark.parametrize("steps", [1, 3])
def test_prox_once_per_real_optimizer_step(digits200, monkeypatch, steps):
    X, y = digits200
    calls = []
    real_prox = engine.prox_l1_

    def spy(params, thresholds):
        calls.append([t if isinstance(t, float) else t.clone() for t in thresholds])
        return real_prox(params, thresholds)

    monkeypatch.setattr(engine, "prox_l1_", spy)
    acc = AcceleratedSoftRegCNNClassifier(accelerator=_accelerator(steps), lambda1=1e-3, **SMALL)
    acc.fit(X, y)
    n_batches = math.ceil(len(X) / SMALL["batch_size"])  # 7
    # Accelerate syncs every `steps` batches and at the end of each epoch
    expected = SMALL["max_epochs"] * math.ceil(n_batches / steps)
    assert len(calls) == expected
    # the wrapped Adam really stepped that often, and the thresholds came
    # from its state (Adam-preconditioned tensors, not the plain lr * lambda1)
    inner = acc.optimizer_.optimizer
    first = next(p for p in acc.module_.parameters() if p.ndim > 1)
    assert int(inner.state[first]["step"]) == expected
    assert any(torch.is_tensor(t) for t in calls[-1])


def test_accumulation_matches_larger_batches(digits200):
    # k micro-batches of size b accumulate the gradient of one batch of k*b;
    # without dropout the two runs follow the same path up to float rounding
    # (the shuffled order is the same: same seed, same number of samples).
    X, y = digits200
    kw = {**SMALL, "lambda1": 1e-3, "lambda2": 1e-3, "module__dropout": 0.0, "max_epochs": 1}
    big = AcceleratedSoftRegCNNClassifier(accelerator=_accelerator(1), **{**kw, "batch_size": 40})
    big.fit(X, y)
    small = AcceleratedSoftRegCNNClassifier(accelerator=_accelerator(2), **{**kw, "batch_size": 20})
    small.fit(X, y)
    np.testing.assert_allclose(small.predict_proba(X), big.predict_proba(X), atol=1e-5)
    assert small.history[-1, "train_l2"] == pytest.approx(big.history[-1, "train_l2"], rel=1e-4)


def test_clone_and_pickle(digits200):
    X, y = digits200
    acc = AcceleratedSoftRegCNNClassifier(accelerator=_accelerator(), **SMALL)
    params = clone(acc).get_params()
    assert params["accelerator"] is acc.get_params()["accelerator"]
    acc.fit(X, y)
    restored = pickle.loads(pickle.dumps(acc))
    assert restored.get_params()["device"] is None
    np.testing.assert_array_equal(restored.predict_proba(X), acc.predict_proba(X))


@pytest.mark.parametrize("verbose", [0, 2])
def test_epoch_table_follows_verbose_and_fit_keeps_the_sink_parameter(digits200, capsys, verbose):
    X, y = digits200
    acc = AcceleratedSoftRegCNNClassifier(accelerator=_accelerator(), verbose=verbose, **SMALL)
    acc.fit(X, y)
    out = capsys.readouterr().out
    assert ("train_loss" in out) == (verbose == 2)  # verbose=0 prints nothing
    assert acc.get_params(deep=False)["callbacks__print_log__sink"] == "auto"  # fit changed no parameter


def test_regressor_matches_plain():
    X, y = load_diabetes(return_X_y=True)
    kw = {"max_epochs": 2, "random_state": 0, "lambda1": 1e-3, "alpha": 0.1}
    # the Accelerate variants keep torch's default (unfused) Adam; so does this plain fit
    plain = SoftRegRegressor(device="cpu", optimizer__fused=False, **kw).fit(X, y)
    acc = AcceleratedSoftRegRegressor(accelerator=_accelerator(), **kw).fit(X, y)
    assert acc.history[:, "train_kl"] == plain.history[:, "train_kl"]
    mean, std = acc.predict(X[:10], return_std=True)
    # the same weights; the heads' one matrix product may round the last bit differently
    # with another batch layout
    np.testing.assert_allclose(mean, plain.predict(X[:10]), rtol=1e-6)
    assert np.all(std > 0)


def test_device_must_be_left_to_accelerate(digits200):
    X, y = digits200
    acc = AcceleratedSoftRegCNNClassifier(accelerator=_accelerator(), device="cpu", **SMALL)
    with pytest.raises(ValueError, match="set device=None"):
        acc.fit(X, y)


# ----------------------------------------------------------------------
# mixed precision and loss scaling
@pytest.fixture
def fresh_accelerate_state():
    """A fresh process-wide Accelerate state before and after the test.

    ``AcceleratorState`` is fixed by the first ``Accelerator`` of the process: another
    ``mixed_precision`` then raises, and a later ``Accelerator(cpu=True)`` would inherit
    this test's. Accelerate's own tests reset it the same way.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


class _OutputLayerDtypes(Callback):
    """The dtypes in which the output layer computes on training batches.

    (Accelerate casts the network's outputs back to float32 under mixed precision, so
    ``y_pred`` does not show them.)
    """

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.dtypes = set()
        layer = net.accelerator.unwrap_model(net.module_).classifier[-1]

        def record(module, inputs, output):
            if module.training:
                self.dtypes.add(output.dtype)

        self.handle = layer.register_forward_hook(record)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        self.handle.remove()


def test_bf16_mixed_precision_on_cpu(digits200, fresh_accelerate_state):
    X, y = digits200
    kw = dict(SMALL, lambda1=1e-3, lambda2=1e-4, alpha=0.1)
    plain = SoftRegCNNClassifier(device="cpu", **kw).fit(X, y)
    dtypes = _OutputLayerDtypes()
    acc = AcceleratedSoftRegCNNClassifier(
        accelerator=Accelerator(cpu=True, mixed_precision="bf16"),
        callbacks=[("dtypes", dtypes)], **kw,
    ).fit(X, y)
    assert acc.accelerator.mixed_precision == "bf16"
    # the forward passes ran under bf16 autocast, on float32 master weights
    assert dtypes.dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in acc.module_.parameters())
    for key in ("train_loss", "train_l1", "train_l2", "train_kl"):
        assert np.all(np.isfinite(acc.history[:, key])), key
    assert all(v > 0 for v in acc.history[:, "train_l1"])
    # the penalty terms are those of the float32 weights, which bf16 moved only slightly
    assert acc.history[:, "train_l1"] == pytest.approx(plain.history[:, "train_l1"], rel=0.02)
    proba = acc.predict_proba(X)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba, plain.predict_proba(X), atol=0.01)
    assert not np.array_equal(proba, plain.predict_proba(X))  # bf16 did change the fit
    assert acc.sparsity_ == pytest.approx(plain.sparsity_, abs=0.02)


class _ScaleAndProx(Callback):
    """After each training batch: the loss scale and the proximal steps taken so far."""

    def __init__(self, scaler, prox_calls):
        self.scaler = scaler
        self.prox_calls = prox_calls

    def initialize(self):
        self.records = []
        return self

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if training:
            self.records.append((float(self.scaler.get_scale()), len(self.prox_calls)))


def _spy_prox(monkeypatch):
    calls = []
    real_prox = engine.prox_l1_

    def spy(params, thresholds):
        calls.append(len(params))
        return real_prox(params, thresholds)

    monkeypatch.setattr(engine, "prox_l1_", spy)
    return calls


def _check_prox_follows_real_steps(acc, recorder, init_scale, calls, n_samples):
    """The optimizer skipped some steps (the loss scale dropped) and took others; the
    proximal step ran after each step taken and after no step skipped."""
    scales = [init_scale] + [scale for scale, _ in recorder.records]
    skipped = [after < before for before, after in zip(scales, scales[1:])]
    assert len(skipped) == SMALL["max_epochs"] * math.ceil(n_samples / SMALL["batch_size"])
    assert skipped[0] and not all(skipped)
    prox_per_batch = np.diff([0] + [n for _, n in recorder.records]).tolist()
    assert prox_per_batch == [0 if s else 1 for s in skipped]
    # the wrapped Adam stepped exactly as often as the proximal step ran
    inner = acc.optimizer_.optimizer
    first = next(p for p in acc.module_.parameters() if p.ndim > 1)
    assert int(inner.state[first]["step"]) == len(calls) == skipped.count(False)


# Accelerate reports a skipped step through AcceleratedOptimizer.step_was_skipped, which
# it sets when GradScaler did not call the optimizer's step(). GradScaler calls step() of
# an optimizer with _step_supports_amp_scaling (fused Adam) in every case, passing
# found_inf so that the kernel skips the update itself: the skip would go unreported and
# the proximal step run (NaN weights after a skipped first step). So the Accelerate
# variants do not default to fused Adam; "default_adam" checks that.
OPTIMIZER_FUSED = [
    pytest.param({"optimizer__fused": False}, id="adam"),
    pytest.param({}, id="default_adam"),
]


class _OverflowFirstBackward(Callback):
    """The first backward pass gives one weight an infinite gradient, as a float16
    overflow of the scaled loss's gradient does."""

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        weight = next(p for p in net.module_.parameters() if p.ndim > 1)
        fired = []

        def overflow(grad):
            if fired:
                return grad
            fired.append(True)
            return torch.full_like(grad, float("inf"))

        self.handle = weight.register_hook(overflow)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        self.handle.remove()


@pytest.mark.parametrize("optimizer_kw", OPTIMIZER_FUSED)
def test_prox_skipped_with_a_loss_scaled_step_that_overflowed(digits200, monkeypatch,
                                                              optimizer_kw):
    # fp16 loss scaling as on a GPU, on the CPU: Accelerate builds no GradScaler there,
    # so give the accelerator one; the first step's gradient overflows, GradScaler skips
    # that step and halves the scale, and the later steps are taken.
    X, y = digits200
    calls = _spy_prox(monkeypatch)
    accelerator = _accelerator()
    init_scale = 2.0**8
    accelerator.scaler = torch.amp.GradScaler(
        "cpu", init_scale=init_scale, backoff_factor=0.5, growth_interval=10**6
    )
    recorder = _ScaleAndProx(accelerator.scaler, calls)
    acc = AcceleratedSoftRegCNNClassifier(
        accelerator=accelerator, lambda1=1e-3,
        callbacks=[("overflow", _OverflowFirstBackward()), ("steps", recorder)],
        **SMALL, **optimizer_kw,
    ).fit(X, y)
    assert [scale for scale, _ in recorder.records[:2]] == [init_scale / 2] * 2
    _check_prox_follows_real_steps(acc, recorder, init_scale, calls, len(X))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("optimizer_kw", OPTIMIZER_FUSED)
def test_prox_skipped_with_an_overflowed_fp16_step_cuda(digits200, monkeypatch,
                                                        fresh_accelerate_state, optimizer_kw):
    from accelerate.utils import GradScalerKwargs

    X, y = digits200
    calls = _spy_prox(monkeypatch)
    # 2**40 overflows float16 in the backward pass for certain; each overflow divides
    # the scale by 2**16 (2**24, then 2**8), so after a step or two the steps are taken
    init_scale = 2.0**40
    accelerator = Accelerator(
        mixed_precision="fp16",
        kwargs_handlers=[GradScalerKwargs(init_scale=init_scale, backoff_factor=2.0**-16,
                                          growth_interval=10**6)],
    )
    assert accelerator.scaler is not None
    recorder = _ScaleAndProx(accelerator.scaler, calls)
    acc = AcceleratedSoftRegCNNClassifier(
        accelerator=accelerator, lambda1=1e-3, callbacks=[("steps", recorder)],
        **SMALL, **optimizer_kw,
    ).fit(X, y)
    assert next(acc.module_.parameters()).is_cuda
    _check_prox_follows_real_steps(acc, recorder, init_scale, calls, len(X))
