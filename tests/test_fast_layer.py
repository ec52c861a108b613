"""The fast layer on and off: the same fits, history and predictions.

``_fast_layer`` switches tensor batches (instead of skorch's DataLoader) and
the flat-buffer penalty engine (instead of the reference engine on
penalties.py). Off, every part of a fit is skorch's and the reference's.
"""

import numpy as np
import pytest
import torch

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor

PENALTIES = dict(lambda1=1e-3, lambda2=1e-3, alpha=0.1)
COMMON = dict(max_epochs=3, batch_size=32, random_state=0, device="cpu")


def _off(cls):
    return type(cls.__name__, (cls,), {"_fast_layer": False})


def _history(est):
    rows = []
    for row in est.history:
        rows.append({k: v for k, v in row.items() if k not in ("dur", "batches")})
    return rows


def _data(kind, digits, regression_data):
    if kind == "classifier":
        X, y = digits
        return SoftRegCNNClassifier, X[:300].reshape(-1, 1, 8, 8).astype(np.float32), y[:300]
    X, y = regression_data
    return SoftRegRegressor, X, y


CASES = {
    "classifier": ("classifier", dict(module__channels=(4, 8), module__hidden_units=16)),
    "classifier, weights, early stopping": (
        "classifier", dict(module__channels=(4, 8), module__hidden_units=16, early_stopping=True,
                           n_iter_no_change=2, sample_weight=True)),
    "regressor, lambda_features": ("regressor", dict(lambda_features=1e-2)),
    "regressor, SGD, subgradient L1": (
        "regressor", dict(optimizer=torch.optim.SGD, lr=0.05, l1_method="subgradient")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fast_layer_on_and_off_fit_the_same(case, digits, regression_data):
    kind, params = CASES[case]
    params = dict(params)
    cls, X, y = _data(kind, digits, regression_data)
    fit_kwargs = {}
    if params.pop("sample_weight", False):
        fit_kwargs["sample_weight"] = np.random.RandomState(0).uniform(0.5, 2.0, len(X))
    on = cls(**COMMON, **PENALTIES, **params).fit(X, y, **fit_kwargs)
    off = _off(cls)(**COMMON, **PENALTIES, **params).fit(X, y, **fit_kwargs)
    h_on, h_off = _history(on), _history(off)
    assert [sorted(r) for r in h_on] == [sorted(r) for r in h_off]
    for a, b in zip(h_on, h_off):
        for key, value in a.items():
            if isinstance(value, float):
                # the flat buffer adds the sums in another order: rounding only
                assert value == pytest.approx(b[key], rel=1e-5, abs=1e-9), key
            else:
                assert value == b[key], key
    if kind == "classifier":
        np.testing.assert_allclose(on.predict_proba(X), off.predict_proba(X), rtol=1e-5, atol=1e-6)
    else:
        for a, b in zip(on.predict(X, return_std=True), off.predict(X, return_std=True)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert on.sparsity_ == off.sparsity_
