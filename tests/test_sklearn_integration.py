"""Pipeline, GridSearchCV, joblib persistence and CUDA."""

import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.utils.validation import check_is_fitted

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor


def test_classifier_in_pipeline_and_grid_search_over_penalties(small_digits):
    X, y = small_digits
    pipe = make_pipeline(
        MinMaxScaler(), SoftRegCNNClassifier(max_epochs=2, random_state=0, device="cpu")
    )
    grid = {
        "softregcnnclassifier__lambda1": [0.0, 1e-3],
        "softregcnnclassifier__lambda2": [0.0, 1e-4],
        "softregcnnclassifier__alpha": [0.0, 0.1],
    }
    search = GridSearchCV(pipe, grid, cv=StratifiedKFold(2), n_jobs=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 8
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_estimator_.score(X, y) > 0.5
    sparsities = [
        SoftRegCNNClassifier(max_epochs=2, random_state=0, device="cpu", lambda1=l1)
        .fit(X, y)
        .sparsity_
        for l1 in (0.0, 1e-2)
    ]
    assert sparsities[0] == 0.0 < sparsities[1]


def test_regressor_in_pipeline_and_grid_search(regression_data):
    X, y = regression_data
    pipe = make_pipeline(
        StandardScaler(), SoftRegRegressor(max_epochs=3, random_state=0, device="cpu")
    )
    grid = {"softregregressor__lambda2": [0.0, 1e-3], "softregregressor__alpha": [0.0, 0.5]}
    search = GridSearchCV(pipe, grid, cv=2, n_jobs=2).fit(X, y)
    assert search.best_estimator_.predict(X).shape == (200,)


@pytest.mark.parametrize("factory", ["classifier", "regressor"])
def test_joblib_round_trip_same_process(tmp_path, small_digits, regression_data, factory):
    if factory == "classifier":
        X, y = small_digits
        est = SoftRegCNNClassifier(max_epochs=2, lambda1=1e-3, alpha=0.1, random_state=0)
    else:
        X, y = regression_data
        est = SoftRegRegressor(max_epochs=2, alpha=0.1, random_state=0)
    est.fit(X, y)
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    assert loaded.get_params()["device"] == "auto"
    assert loaded.sparsity_ == est.sparsity_
    assert loaded.history[-1, "train_l1"] == est.history[-1, "train_l1"]


def test_joblib_round_trip_new_process(tmp_path, small_digits):
    X, y = small_digits
    est = SoftRegCNNClassifier(max_epochs=2, random_state=0, device="cpu").fit(X, y)
    model, data, out = tmp_path / "m.joblib", tmp_path / "X.npy", tmp_path / "p.npy"
    joblib.dump(est, model)
    np.save(data, X)
    code = (
        "import joblib, numpy as np, sys;"
        "m = joblib.load(sys.argv[1]);"
        "np.save(sys.argv[3], m.predict_proba(np.load(sys.argv[2])))"
    )
    subprocess.run([sys.executable, "-c", code, str(model), str(data), str(out)], check=True)
    np.testing.assert_array_equal(np.load(out), est.predict_proba(X))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fit_predict_and_cpu_reload(tmp_path, small_digits):
    X, y = small_digits
    est = SoftRegCNNClassifier(
        max_epochs=2, lambda1=1e-3, lambda2=1e-4, alpha=0.1, random_state=0, device="cuda"
    ).fit(X, y)
    assert next(est.module_.parameters()).is_cuda
    assert est.history[-1, "train_l1"] > 0
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.mean(est.predict(X) == y) > 0.5
    path = tmp_path / "cuda.joblib"
    joblib.dump(est, path)
    loaded = joblib.load(path)
    np.testing.assert_allclose(loaded.predict_proba(X), proba, rtol=1e-5, atol=1e-6)


def test_device_auto_trains_on_the_available_device(small_digits):
    X, y = small_digits
    est = SoftRegCNNClassifier(max_epochs=1, random_state=0).fit(X, y)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(est.module_.parameters()).device.type == expected


def test_a_failed_fit_leaves_the_estimator_unfitted():
    reg = SoftRegRegressor(module__bogus=1, max_epochs=1, device="cpu")
    with pytest.raises(TypeError, match="bogus"):
        reg.fit(np.zeros((10, 2), np.float32), np.arange(10.0))
    with pytest.raises(NotFittedError):
        check_is_fitted(reg)
