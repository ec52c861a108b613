"""The Accelerate variants on CPU, where Accelerate runs a single process."""

import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_diabetes

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
    plain = SoftRegRegressor(device="cpu", **kw).fit(X, y)
    acc = AcceleratedSoftRegRegressor(accelerator=_accelerator(), **kw).fit(X, y)
    assert acc.history[:, "train_kl"] == plain.history[:, "train_kl"]
    mean, std = acc.predict(X[:10], return_std=True)
    np.testing.assert_array_equal(mean, plain.predict(X[:10]))
    assert np.all(std > 0)


def test_device_must_be_left_to_accelerate(digits200):
    X, y = digits200
    acc = AcceleratedSoftRegCNNClassifier(accelerator=_accelerator(), device="cpu", **SMALL)
    with pytest.raises(ValueError, match="set device=None"):
        acc.fit(X, y)
