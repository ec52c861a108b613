"""Concurrency (threads, GridSearchCV workers) and cross-process determinism."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from joblib import parallel_config
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor

REPO = Path(__file__).resolve().parents[1]
TINY_CNN = {"module__channels": (4, 8), "module__hidden_units": 16}


def _data():
    rng = np.random.RandomState(0)
    X_img = rng.rand(60, 1, 6, 6).astype(np.float32)
    y_cls = (X_img[:, 0, :3].mean(axis=(1, 2)) > X_img[:, 0, 3:].mean(axis=(1, 2))).astype(int)
    X_tab = rng.randn(60, 5)
    y_reg = X_tab @ [1.0, -2.0, 0.5, 0.0, 0.3] + 0.1 * rng.randn(60)
    return X_img, y_cls, X_tab, y_reg


def test_predict_proba_from_8_threads_equals_serial():
    X, y, _, _ = _data()
    clf = SoftRegCNNClassifier(**TINY_CNN, max_epochs=2, batch_size=16, alpha=0.1, device="cpu",
                               random_state=0).fit(X, y)
    # each thread gets a different slice, so mixed-up outputs would show
    slices = [slice(i, i + 20 + i) for i in range(8)]
    serial = [clf.predict_proba(X[s]) for s in slices]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            threaded = list(pool.map(lambda s: clf.predict_proba(X[s]), slices))
            for a, b in zip(serial, threaded):
                np.testing.assert_array_equal(a, b)


def test_grid_search_n_jobs_2_equals_n_jobs_1():
    X, y, _, _ = _data()
    est = SoftRegCNNClassifier(**TINY_CNN, max_epochs=2, batch_size=16, device="cpu", random_state=0)
    grid = {"lambda1": [0.0, 1e-2]}
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    # A different torch thread count changes the float32 reduction order (about
    # 1e-9 in log loss here), so both searches use one intra-op thread: the
    # serial one through torch, the loky workers through inner_max_num_threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = GridSearchCV(est, grid, cv=cv, n_jobs=1, scoring="neg_log_loss").fit(X, y)
    finally:
        torch.set_num_threads(threads)
    with parallel_config(backend="loky", inner_max_num_threads=1):
        parallel = GridSearchCV(est, grid, cv=cv, n_jobs=2, scoring="neg_log_loss").fit(X, y)
    results = [serial.cv_results_, parallel.cv_results_]
    for key in ("split0_test_score", "split1_test_score", "mean_test_score"):
        np.testing.assert_array_equal(results[0][key], results[1][key])
    assert len(set(results[0]["mean_test_score"])) == 2  # the parameter did change the fits


# The child loads this file by its path: ``import tests...`` would pick up any
# other ``tests`` package that site-packages holds.
_CHILD = """
import importlib.util, sys, numpy as np
spec = importlib.util.spec_from_file_location("_determinism_helper", {path!r})
helper = importlib.util.module_from_spec(spec)
spec.loader.exec_module(helper)
np.savez(sys.argv[1], **helper._fit_and_predict())
"""


def _fit_and_predict():
    # one intra-op thread in both processes: the thread count changes float
    # reduction order, and an earlier test may have changed this process's
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_and_predict_one_thread()
    finally:
        torch.set_num_threads(threads)


def _fit_and_predict_one_thread():
    X_img, y_cls, X_tab, y_reg = _data()
    clf = SoftRegCNNClassifier(**TINY_CNN, max_epochs=2, batch_size=16, lambda1=1e-3, alpha=0.1,
                               device="cpu", random_state=7).fit(X_img, y_cls)
    reg = SoftRegRegressor(max_epochs=3, batch_size=16, lambda1=1e-3, alpha=0.1, device="cpu",
                           random_state=7).fit(X_tab, y_reg)
    mean, std = reg.predict(X_tab, return_std=True)
    return {"proba": clf.predict_proba(X_img), "mean": mean, "std": std}


def test_same_random_state_bit_identical_across_processes(tmp_path):
    torch.manual_seed(12345)  # this process's global RNG state differs from the child's
    here = _fit_and_predict()
    out = tmp_path / "child.npz"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", _CHILD.format(path=__file__), str(out)],
                   check=True, env=env, cwd=tmp_path)
    child = np.load(out)
    for key, value in here.items():
        np.testing.assert_array_equal(child[key], value)  # bit-identical, no tolerance
