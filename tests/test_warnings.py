"""Warnings name the user's line that called into the library, on every call path."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sk_softreg import BatchedGridSearchCV, SoftRegCNNClassifier, SoftRegRegressor


def _regression(n=60):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(n, 5))
    return X, X[:, 0]


def _multilabel(n=60):
    X, y = load_digits(return_X_y=True)
    X, y = X[:n] / 16, y[:n]
    return X, np.c_[y % 2, y > 4, np.zeros(n, dtype=int)]  # the last label is constant


def _features_fit():
    X, y = _regression()
    SoftRegRegressor(lambda_features=1e4, max_epochs=3, random_state=0, device="cpu").fit(X, y)


def _multilabel_fit():
    X, Y = _multilabel()
    SoftRegCNNClassifier(max_epochs=1, random_state=0, device="cpu").fit(X, Y)


def _multilabel_partial_fit():
    X, Y = _multilabel()
    SoftRegCNNClassifier(max_epochs=1, random_state=0, device="cpu").partial_fit(X, Y)


def _search_fallback():
    X, y = _regression()
    est = SoftRegRegressor(optimizer=torch.optim.SGD, max_epochs=1, random_state=0, device="cpu")
    BatchedGridSearchCV(est, {"alpha": [0.0, 0.1]}, cv=2, refit=False).fit(X, y)


def _search_fit():
    X, y = _regression()
    est = SoftRegRegressor(lambda_features=1e4, max_epochs=3, random_state=0, device="cpu")
    GridSearchCV(make_pipeline(StandardScaler(), est), {"softregregressor__alpha": [0.0]},
                 cv=2, refit=False).fit(X, y)


CALLS = {
    "lambda_features zeroes every input (fit)": (_features_fit, "ignores its inputs"),
    "constant multilabel column (fit)": (_multilabel_fit, "are constant"),
    "constant multilabel column (partial_fit)": (_multilabel_partial_fit, "are constant"),
    "BatchedGridSearchCV falls back": (_search_fallback, "not stacked"),
    "a fit inside GridSearchCV and a Pipeline": (_search_fit, "ignores its inputs"),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_warning_points_at_the_callers_line(name):
    call, match = CALLS[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    mine = [w for w in caught if match in str(w.message)]
    assert mine, [str(w.message) for w in caught]
    assert {w.filename for w in mine} == {__file__}
