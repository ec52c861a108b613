"""Grid search over lambda1 / lambda2 / alpha on a Dask cluster.

Run against a running scheduler::

    dask scheduler                                   # on the scheduler host
    dask worker tcp://host:8786 --nworkers 4 --nthreads 1   # on each worker host
    python examples/dask_search.py --scheduler tcp://host:8786

Without ``--scheduler`` the example starts a LocalCluster on this machine.
The workers need sk_softreg, torch and scikit-learn installed (the same
versions as the client).
"""

import argparse
import sys

import joblib
import numpy as np

try:
    from distributed import Client
except ImportError:
    sys.exit('dask_search.py needs dask.distributed: pip install -e ".[distributed]"')
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split

from sk_softreg import SoftRegCNNClassifier
from sk_softreg.distributed import set_torch_threads


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", default=None, help="scheduler address, e.g. tcp://host:8786")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    if args.scheduler:
        client = Client(args.scheduler)
    else:  # a client that starts its own LocalCluster closes it with itself
        client = Client(n_workers=args.workers, threads_per_worker=1, processes=True)
    with client:
        run_search(client, args)


def run_search(client, args):
    print("dashboard:", client.dashboard_link)
    print("torch threads per worker:", set_torch_threads(client, args.torch_threads))

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)
    grid = {"lambda1": [0.0, 1e-5, 1e-4], "lambda2": [0.0, 1e-4], "alpha": [0.0, 0.1]}
    search = GridSearchCV(
        SoftRegCNNClassifier(max_epochs=args.epochs, random_state=0, device="cpu"),
        grid,
        cv=StratifiedKFold(3),
        n_jobs=-1,
    )
    with joblib.parallel_config(backend="dask"):
        search.fit(X_train, y_train)  # 18 candidates x 3 folds = 54 fits on the cluster
    print("best params:", search.best_params_)
    print(f"cv accuracy {search.best_score_:.3f}, test accuracy {search.score(X_test, y_test):.3f}")
    print(f"sparsity of the refit network: {search.best_estimator_.sparsity_:.3f}")


if __name__ == "__main__":
    main()
