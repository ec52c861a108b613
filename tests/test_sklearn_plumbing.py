"""Edges of the scikit-learn plumbing (sk_softreg._sklearn): device, pickling."""

import pickle

import numpy as np
import pytest
import torch

from sk_softreg import SoftRegRegressor
from sk_softreg._fit_state import FitState
from sk_softreg._sklearn import resolve_device

_rng = np.random.RandomState(0)
X = _rng.randn(24, 3).astype(np.float32)
Y = X @ np.array([1.0, -1.0, 0.5])


def _fitted(**kw):
    params = {"max_epochs": 1, "batch_size": 8, "random_state": 0, "device": "cpu", **kw}
    return SoftRegRegressor(**params).fit(X, Y)


def test_resolve_device_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(None) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"


def test_pickle_keeps_device_auto():
    est = _fitted(device="auto")
    loaded = pickle.loads(pickle.dumps(est))
    assert loaded.get_params()["device"] == "auto"
    assert loaded.device == resolve_device("auto")


def test_pickle_leaves_out_a_running_fit_state():
    est = _fitted()
    est._fit_state = FitState()  # as inside a fit
    assert "_fit_state" not in est.__getstate__()
    assert getattr(pickle.loads(pickle.dumps(est)), "_fit_state", None) is None
    assert isinstance(est._fit_state, FitState)  # the live net keeps it


def test_pickle_from_before_scoring_existed_scores_by_loss():
    est = _fitted()
    state = est.__getstate__()
    del state["scoring"]  # as pickled by 0.1.0
    old = SoftRegRegressor.__new__(SoftRegRegressor)
    old.__setstate__(state)
    assert old.scoring == "loss"
    np.testing.assert_array_equal(old.predict(X), est.predict(X))


def test_fitted_needs_n_features_in():
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    assert not SoftRegRegressor().__sklearn_is_fitted__()
    est = _fitted()
    check_is_fitted(est)
    del est.n_features_in_  # initialized, but never saw data
    assert est.initialized_
    assert not est.__sklearn_is_fitted__()
    with pytest.raises(NotFittedError):
        check_is_fitted(est)


def test_device_none_computes_on_the_cpu():
    assert SoftRegRegressor(device=None)._torch_device() == torch.device("cpu")
    assert SoftRegRegressor(device="cpu")._torch_device() == torch.device("cpu")
