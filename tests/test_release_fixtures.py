"""Files written by an earlier release still load and predict as they did.

``tests/fixtures/release-0.1.0`` was written by ``make_release_fixtures.py``
with sk_softreg 0.1.0 (the release before the engine was split into modules):
a joblib pickle, the safe format and skorch's ``save_params`` files of a
penalized classifier and of a regressor with early stopping and
``lambda_features``, with the inputs and the outputs they gave.
"""

from pathlib import Path

import joblib
import numpy as np
import pytest

import sk_softreg
from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor

RELEASE = Path(__file__).resolve().parent / "fixtures" / "release-0.1.0"
CLASSES = {"classifier": SoftRegCNNClassifier, "regressor": SoftRegRegressor}


def _outputs(est, X):
    if isinstance(est, SoftRegCNNClassifier):
        return [est.predict_proba(X)]
    return list(est.predict(X, return_std=True))


def _expected(name):
    saved = np.load(RELEASE / f"{name}.npz")
    keys = ["predict_proba"] if name == "classifier" else ["mean", "std"]
    return saved["X"], [saved[k] for k in keys]


@pytest.mark.parametrize("name", list(CLASSES))
def test_pickle_of_the_previous_release_loads_and_predicts_the_same(name):
    X, expected = _expected(name)
    est = joblib.load(RELEASE / f"{name}.pkl")
    assert type(est) is CLASSES[name]
    assert est.get_params()["scoring"] == "loss"  # a parameter added since: its old behaviour
    for got, want in zip(_outputs(est, X), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(CLASSES))
def test_safe_format_of_the_previous_release_loads_and_predicts_the_same(name):
    X, expected = _expected(name)
    est = sk_softreg.load(RELEASE / f"{name}.skr")
    for got, want in zip(_outputs(est, X), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(CLASSES))
def test_save_params_of_the_previous_release_load_into_a_new_net(name):
    """skorch's save_params module file loads into a freshly initialized net. The
    optimizer file does not when the release split Adam's parameter groups for
    lambda2 > 0 (0.1.0 did; this release keeps skorch's groups): the CHANGELOG says so."""
    X, expected = _expected(name)
    est = joblib.load(RELEASE / f"{name}.pkl")
    est.initialize()  # new random weights, a new optimizer
    est.load_params(f_params=RELEASE / f"{name}.params.pt")
    for got, want in zip(_outputs(est, X), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert len(est.optimizer_.param_groups) == 1
    with pytest.raises(ValueError, match="parameter group"):
        est.load_params(f_optimizer=RELEASE / f"{name}.optimizer.pt")
