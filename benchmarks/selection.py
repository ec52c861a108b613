"""Feature selection on friedman1 with 50 inputs (issue 39): SoftRegSelectorCV against others.

Run from the repository root::

    python benchmarks/selection.py                # 3 seeds, written to benchmarks/selection.md
    python benchmarks/selection.py --quick        # one seed, not written

Data: ``make_friedman1(3000, n_features=50, noise=1.0, random_state=seed)`` (inputs
0-4 informative, 45 noise), ``train_test_split(test_size=0.25, random_state=seed)``,
``StandardScaler`` fitted on the training part; the same split for every method.
Methods:

- ``SoftRegSelectorCV``: its defaults around ``SoftRegRegressor(random_state=0)``,
  ``n_jobs=2``; the final model is its refit;
- ``GridSearchCV`` over ``lambda_features`` in {0.005, 0.01, 0.02, 0.05, 0.1} of
  ``SoftRegRegressor(random_state=0)`` (5 folds, ``n_jobs=2``); kept: the best
  estimator's non-zero columns, final model: that estimator;
- ``LassoCV(cv=5, n_jobs=2)``: kept: non-zero coefficients, final model: the lasso;
- ``SelectFromModel(RandomForestRegressor(n_jobs=2, random_state=0))`` then
  ``SoftRegRegressor(random_state=0)`` on the kept inputs;
- ``LassoNetRegressorCV()`` defaults, if ``lassonet`` is importable (install it in a
  separate venv, never as a dependency); final model: its refit on its chosen λ.

Also reported: the dense ``SoftRegRegressor(random_state=0)`` on all 50 inputs.
Wall time is for ``fit`` on a shared machine: compare within a run only.
"""

import argparse
import datetime
import os
import platform
import time

import numpy as np
import torch
from sklearn.datasets import make_friedman1
from sklearn.ensemble import RandomForestRegressor
from sklearn.feature_selection import SelectFromModel
from sklearn.linear_model import LassoCV
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.preprocessing import StandardScaler

from sk_softreg import SoftRegRegressor, SoftRegSelectorCV

GRID = [0.005, 0.01, 0.02, 0.05, 0.1]


def _data(seed):
    X, y = make_friedman1(3000, n_features=50, noise=1.0, random_state=seed)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed)
    sc = StandardScaler().fit(Xtr)
    return (sc.transform(Xtr).astype(np.float32), sc.transform(Xte).astype(np.float32),
            ytr.astype(np.float32), yte.astype(np.float32))


def _kept_columns(est):
    return np.linalg.norm(est._feature_weight().detach().numpy(), axis=0) > 0


def dense(Xtr, ytr, Xte, yte):
    est = SoftRegRegressor(random_state=0).fit(Xtr, ytr)
    return np.ones(Xtr.shape[1], bool), est.score(Xte, yte)


def ours(Xtr, ytr, Xte, yte):
    sel = SoftRegSelectorCV(SoftRegRegressor(random_state=0), n_jobs=2).fit(Xtr, ytr)
    return sel.support_, sel.score(Xte, yte)


def grid(Xtr, ytr, Xte, yte):
    search = GridSearchCV(SoftRegRegressor(random_state=0), {"lambda_features": GRID},
                          cv=5, n_jobs=2).fit(Xtr, ytr)
    return _kept_columns(search.best_estimator_), search.score(Xte, yte)


def lasso(Xtr, ytr, Xte, yte):
    est = LassoCV(cv=5, n_jobs=2, random_state=0).fit(Xtr, ytr)
    return est.coef_ != 0, est.score(Xte, yte)


def forest(Xtr, ytr, Xte, yte):
    sfm = SelectFromModel(RandomForestRegressor(n_jobs=2, random_state=0)).fit(Xtr, ytr)
    keep = sfm.get_support()
    est = SoftRegRegressor(random_state=0).fit(Xtr[:, keep], ytr)
    return keep, est.score(Xte[:, keep], yte)


def lassonet(Xtr, ytr, Xte, yte):
    from lassonet import LassoNetRegressorCV

    est = LassoNetRegressorCV().fit(Xtr, ytr)
    keep = est.best_selected_.cpu().numpy().astype(bool)
    return keep, r2_score(yte, np.ravel(est.predict(Xte)))


METHODS = {"dense SoftRegRegressor (all inputs)": dense, "SoftRegSelectorCV": ours,
           "GridSearchCV over lambda_features": grid, "LassoCV": lasso,
           "SelectFromModel(RandomForest) + SoftRegRegressor": forest,
           "LassoNetRegressorCV()": lassonet}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/selection.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        import lassonet  # noqa: F401
    except ImportError:
        METHODS.pop("LassoNetRegressorCV()")
    seeds = [0] if args.quick else [0, 1, 2]
    rows = []
    for seed in seeds:
        data = _data(seed)
        for name, method in METHODS.items():
            t = time.perf_counter()
            keep, r2 = method(data[0], data[2], data[1], data[3])
            wall = time.perf_counter() - t
            rows.append((name, seed, int(keep[:5].sum()), int(keep[5:].sum()), r2, wall))
            print(f"{name}, seed {seed}: {rows[-1][2]}/5, {rows[-1][3]}/45, "
                  f"R² {r2:.3f}, {wall:.1f} s", flush=True)
    if args.quick:
        return
    lines = [
        "# Feature selection on friedman1 with 50 inputs (issue 39)", "",
        f"Generated by `python benchmarks/selection.py` on {datetime.date.today()}, "
        f"{platform.platform()}, {os.cpu_count()} CPUs (a shared machine: wall times "
        "compare within this run only), torch threads 1 per process.", "",
        "`make_friedman1(3000, n_features=50, noise=1.0, random_state=seed)`, 75/25 split "
        "(same for every method), standardized. Informative / noise inputs kept, test R² "
        "of the final model, wall time of `fit`.", "",
        "| method | seed | informative kept | noise kept | test R² | wall (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, seed, inf, noise, r2, wall in rows:
        lines.append(f"| {name} | {seed} | {inf}/5 | {noise}/45 | {r2:.3f} | {wall:.1f} |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
