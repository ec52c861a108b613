"""Wall time of a 16-fit GridSearchCV (8 candidates x 2 folds): local n_jobs=1 vs Dask.

Usage: python benchmarks/dask_vs_local.py [--workers 2]

The Dask side starts a LocalCluster with ``--workers`` worker processes of one
thread each (one torch thread per process) and includes no cluster start-up in
the timing.
"""

import argparse
import time

import joblib
import numpy as np
import torch
from distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from sk_softreg import SoftRegCNNClassifier
from sk_softreg.distributed import set_torch_threads


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    est = SoftRegCNNClassifier(max_epochs=5, random_state=0, device="cpu")
    grid = {"lambda1": [0.0, 1e-4], "lambda2": [0.0, 1e-4], "alpha": [0.0, 0.1]}

    torch.set_num_threads(1)  # the same per-fit thread count on both sides
    t0 = time.perf_counter()
    local = GridSearchCV(est, grid, cv=StratifiedKFold(2), refit=False, n_jobs=1).fit(X, y)
    t_local = time.perf_counter() - t0

    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        set_torch_threads(client, 1)
        t0 = time.perf_counter()
        with joblib.parallel_config(backend="dask"):
            remote = GridSearchCV(est, grid, cv=StratifiedKFold(2), refit=False, n_jobs=-1)
            remote.fit(X, y)
        t_dask = time.perf_counter() - t0
    same = np.array_equal(
        local.cv_results_["mean_test_score"], remote.cv_results_["mean_test_score"]
    )
    print(
        f"16 fits (digits 1797 x 64, 5 epochs): local n_jobs=1 {t_local:.1f} s, "
        f"dask {args.workers} workers {t_dask:.1f} s, identical scores: {same}"
    )
    print("best mean_test_score:", local.cv_results_["mean_test_score"].max())


if __name__ == "__main__":
    main()
