"""feature_importances_ and n_features_selected_ at their edges (sk_softreg._features)."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sk_softreg import SoftRegRegressor

FAST = dict(max_epochs=1, random_state=0, device="cpu")


class _CallsNoLayer(nn.Module):
    """Holds a Linear taking every input but never calls it."""

    def __init__(self, n_features):
        super().__init__()
        self.unused = nn.Linear(n_features, 2)

    def forward(self, X):
        return torch.stack([X.sum(1), X.mean(1)], dim=1)


def test_lambda_features_with_a_module_that_calls_no_layer(regression_data):
    X, y = regression_data
    est = SoftRegRegressor(module=_CallsNoLayer(5), lambda_features=0.1, **FAST)
    with pytest.raises(ValueError, match="_CallsNoLayer calls no layer with parameters"):
        est.fit(X, y)


def test_importances_are_float64_shares_of_the_column_norms(regression_data):
    X, y = regression_data
    est = SoftRegRegressor(**FAST).fit(X, y)
    norms = torch.linalg.vector_norm(est._feature_weight().detach(), dim=0).double().numpy()
    assert est.feature_importances_.dtype == np.float64
    np.testing.assert_allclose(est.feature_importances_, norms / norms.sum(), rtol=1e-12)


def test_only_exact_zero_columns_count_as_dropped(regression_data):
    X, y = regression_data
    est = SoftRegRegressor(**FAST).fit(X, y)
    with torch.no_grad():
        weight = est._feature_weight()
        weight[:, 1] = 1e-12  # tiny, not zero: the input is still used
        weight[:, 3] = 0.0
    est._set_feature_importances()
    assert est.n_features_selected_ == 4
    assert est.feature_importances_[1] > 0 and est.feature_importances_[3] == 0


def test_keeping_a_single_input_does_not_warn():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 1))
    y = 2 * X[:, 0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = SoftRegRegressor(**FAST).fit(X, y)
    assert est.n_features_selected_ == 1
    assert not [w for w in caught if "ignores its inputs" in str(w.message)]
