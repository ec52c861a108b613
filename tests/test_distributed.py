"""Hyperparameter search on a real ``dask.distributed`` cluster.

A ``LocalCluster`` with two worker *processes* is started inside the test
module, so the estimators really are pickled to other interpreters.
"""

import os

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, StratifiedKFold

pytest.importorskip(
    "distributed",
    reason="dask.distributed is not installed; install the extra: pip install 'sk-softreg[distributed]'",
)

import joblib
import torch
from distributed import Client, LocalCluster

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor
from sk_softreg.distributed import set_torch_threads


@pytest.fixture(scope="module")
def client():
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        memory_limit="2GiB",
    )
    client = Client(cluster)
    # one torch thread per worker process: 2 processes x 1 thread, no
    # oversubscription (Dask's nanny already sets OMP_NUM_THREADS=1)
    set_torch_threads(client, 1)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:240] / 16.0).astype(np.float32), y[:240]


def _search(search_cls, **kwargs):
    est = SoftRegCNNClassifier(
        max_epochs=2,
        batch_size=32,
        module__channels=(4, 8),
        module__hidden_units=16,
        random_state=0,
        device="cpu",
    )
    return search_cls(est, cv=StratifiedKFold(2), refit=False, **kwargs)


def _run(search, X, y, backend):
    if backend == "local":
        return search.set_params(n_jobs=1).fit(X, y)
    with joblib.parallel_config(backend="dask"):
        return search.set_params(n_jobs=-1).fit(X, y)


def _assert_same_results(local, remote):
    assert [str(p) for p in local.cv_results_["params"]] == [
        str(p) for p in remote.cv_results_["params"]
    ]
    for key in ("split0_test_score", "split1_test_score", "mean_test_score"):
        # Same seed, same data, same float32 CPU kernels (one torch thread on
        # both sides): the fits are bit-identical, not merely close.
        np.testing.assert_array_equal(local.cv_results_[key], remote.cv_results_[key])


@pytest.fixture
def one_torch_thread():
    """One torch thread in this process, as on the workers (``set_torch_threads(client, 1)``);
    restored after.

    The local and the Dask searches are compared bit for bit, which holds only at equal
    thread counts: the thread count can change the order of float reductions
    (docs/distributed.rst).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_set_torch_threads_reaches_the_task_threads():
    # A cluster of its own, fresh: a worker thread that already ran torch keeps its
    # thread count. The worker process starts with OMP_NUM_THREADS=1 (as Dask's nanny
    # sets by default; here explicitly), so it reports 2 only if the plugin set it.
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                     memory_limit="2GiB", env={"OMP_NUM_THREADS": "1"}) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        (addr,) = client.scheduler_info()["workers"]
        assert client.run(lambda: os.environ.get("OMP_NUM_THREADS")) == {addr: "1"}
        assert set_torch_threads(client, 2) == {addr: 2}
        # read back in a task, where a search's fits run
        assert client.submit(torch.get_num_threads, pure=False).result() == 2
        with pytest.raises(ValueError, match="n_threads must be an int >= 1"):
            set_torch_threads(client, 0)


@pytest.mark.usefixtures("one_torch_thread")
def test_grid_search_on_dask_matches_local(client, digits):
    X, y = digits
    grid = {"lambda1": [0.0, 1e-3], "alpha": [0.0, 0.1]}
    # a second metric records the process id of the process that scored each fit
    scoring = {"score": "accuracy", "pid": lambda est, X, y: os.getpid()}
    local = _run(_search(GridSearchCV, param_grid=grid, scoring=scoring), X, y, "local")
    remote = _run(_search(GridSearchCV, param_grid=grid, scoring=scoring), X, y, "dask")
    assert len(remote.cv_results_["params"]) == 4
    _assert_same_results(local, remote)
    # the fits really ran on the cluster's worker processes, not here
    def pids(search):
        return {int(p) for k in ("split0_test_pid", "split1_test_pid") for p in search.cv_results_[k]}

    assert pids(local) == {os.getpid()}
    workers = set(client.run(os.getpid).values())
    assert len(workers) == 2 and os.getpid() not in workers
    assert pids(remote) <= workers


@pytest.mark.usefixtures("one_torch_thread")
def test_randomized_search_on_dask_matches_local(client, digits):
    X, y = digits
    dist = {"lambda1": [0.0, 1e-4, 1e-3], "lambda2": [0.0, 1e-4], "alpha": [0.0, 0.1]}
    kwargs = {"param_distributions": dist, "n_iter": 3, "random_state": 0}
    local = _run(_search(RandomizedSearchCV, **kwargs), X, y, "local")
    remote = _run(_search(RandomizedSearchCV, **kwargs), X, y, "dask")
    _assert_same_results(local, remote)


@pytest.mark.usefixtures("one_torch_thread")
def test_regressor_search_on_dask_matches_local(client):
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    est = SoftRegRegressor(max_epochs=3, random_state=0, device="cpu")
    grid = {"lambda1": [0.0, 1e-3], "alpha": [0.0, 0.1]}
    local = GridSearchCV(est, grid, cv=2, n_jobs=1).fit(X[:200], y[:200])
    with joblib.parallel_config(backend="dask"):
        remote = GridSearchCV(est, grid, cv=2, n_jobs=-1).fit(X[:200], y[:200])
    _assert_same_results(local, remote)
    # refit=True: the best estimator came back from a worker and predicts
    assert remote.best_estimator_.predict(X[:5]).shape == (5,)
