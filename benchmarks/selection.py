"""Feature selection with many noise inputs (issue 39): SoftRegSelectorCV against others.

Run from the repository root, with a Python that has ISLP (for ``bikeshare``;
``pip install ISLP --no-deps``, benchmark only)::

    PYTHONPATH=$PWD python benchmarks/selection.py                  # both problems, 3 seeds
    PYTHONPATH=$PWD python benchmarks/selection.py --problem real --methods ours --seeds 0
    PYTHONPATH=$PWD python benchmarks/selection.py --quick          # one seed, nothing written

Every measured row goes to ``--results`` (``benchmarks/selection.json``), keyed by
(problem, method, seed), replacing an earlier row of the same key; ``--out``
(``benchmarks/selection.md``) is then written from all the rows there, each with
the date it was measured. So ``LassoNetRegressorCV()`` can be run from another
Python (a venv with ``lassonet``, never a dependency of the project) with
``--methods lassonet``, and the rest again after a change to the selector.

Problems (the same split and standardization for every method):

- ``friedman1``: ``make_friedman1(3000, n_features=50, noise=1.0, random_state=seed)``
  (inputs 0-4 informative, 45 noise), ``train_test_split(test_size=0.25,
  random_state=seed)``, ``StandardScaler`` fitted on the training part.
- ``real``: ``bikeshare`` of ``benchmarks/real_data.py`` (``load_dataset``: 8,645
  hourly rows, target ``log1p(bikers)``, 7 numeric and 5 categorical columns), the
  same 75/25 split, its ``preprocessor`` (scaled numeric, one-hot categorical: 58
  columns) fitted on the training part, then 20 extra columns, each a random
  permutation (``RandomState(seed)``, drawn apart for the training and the test
  rows) of one of the 58 real columns drawn without replacement: known noise with
  a real column's distribution. Then ``StandardScaler`` on all 78 columns (fitted
  on the training part), so that the group penalty meets every column at the same
  scale. "informative" is then "real": not every real column is needed (one-hot
  columns are redundant: a month fixes the season), so the count of real columns
  kept is reported, not a target.

Methods:

- ``dense``: ``SoftRegRegressor(random_state=0)`` on all inputs, the reference R²;
- ``ours``: ``SoftRegSelectorCV`` at its defaults around ``SoftRegRegressor(random_state=0)``,
  ``n_jobs=2`` (``relaxed=True``); the final model is its refit; ``ours-penalized``,
  ``ours-auto``, ``ours-penalized-auto``: the same with ``relaxed=False``,
  ``lambda_max="auto"``, or both;
- ``grid``: ``GridSearchCV`` over ``lambda_features`` in {0.005, 0.01, 0.02, 0.05, 0.1}
  of ``SoftRegRegressor(random_state=0)`` (5 folds, ``n_jobs=2``); kept: the best
  estimator's non-zero columns, final model: that estimator;
- ``lasso``: ``LassoCV(cv=5, n_jobs=2)``: kept: non-zero coefficients, final model: the lasso;
- ``forest``: ``SelectFromModel(RandomForestRegressor(n_jobs=2, random_state=0))`` then
  ``SoftRegRegressor(random_state=0)`` on the kept inputs;
- ``lassonet``: ``LassoNetRegressorCV()`` defaults, if ``lassonet`` is importable;
  final model: its refit on its chosen λ.

Wall time is for ``fit`` with torch on one thread per process, on a shared machine:
compare rows measured on the same date.
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

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

sys.path.insert(0, str(Path(__file__).resolve().parent))

GRID = [0.005, 0.01, 0.02, 0.05, 0.1]
REAL_DATASET = "bikeshare"
N_PERMUTED = 20


def _scaled(Xtr, Xte, ytr, yte):
    sc = StandardScaler().fit(Xtr)
    return (sc.transform(Xtr).astype(np.float32), sc.transform(Xte).astype(np.float32),
            np.asarray(ytr, np.float32), np.asarray(yte, np.float32))


def friedman1_data(seed):
    """Standardized split and the number of informative (leading) inputs."""
    X, y = make_friedman1(3000, n_features=50, noise=1.0, random_state=seed)
    return _scaled(*train_test_split(X, y, test_size=0.25, random_state=seed)), 5


def real_data(seed):
    """bikeshare with ``N_PERMUTED`` permuted copies of its real columns appended last."""
    from real_data import load_dataset, preprocessor

    X, y, numeric, categorical = load_dataset(REAL_DATASET)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed)
    pre = preprocessor(numeric, categorical).fit(Xtr)
    Xtr, Xte = pre.transform(Xtr), pre.transform(Xte)
    rng = np.random.RandomState(seed)
    cols = rng.choice(Xtr.shape[1], N_PERMUTED, replace=False)
    n_real = Xtr.shape[1]
    Xtr = np.hstack([Xtr, np.column_stack([rng.permutation(Xtr[:, c]) for c in cols])])
    Xte = np.hstack([Xte, np.column_stack([rng.permutation(Xte[:, c]) for c in cols])])
    return _scaled(Xtr, Xte, ytr, yte), n_real


PROBLEMS = {"friedman1": friedman1_data, "real": real_data}


def _kept_columns(est):
    return np.linalg.norm(est._feature_weight().detach().numpy(), axis=0) > 0


def dense(Xtr, ytr, Xte, yte):
    est = SoftRegRegressor(random_state=0).fit(Xtr, ytr)
    return np.ones(Xtr.shape[1], bool), est.score(Xte, yte), {}


def _selector(Xtr, ytr, Xte, yte, **params):
    sel = SoftRegSelectorCV(SoftRegRegressor(random_state=0), n_jobs=2, **params).fit(Xtr, ytr)
    return sel.support_, sel.score(Xte, yte), {
        "best_lambda": sel.best_lambda_, "n_lambdas": len(sel.lambdas_),
        "n_relaxed_fits": getattr(sel, "n_relaxed_fits_", 0)}


def ours(Xtr, ytr, Xte, yte):
    return _selector(Xtr, ytr, Xte, yte)


def ours_penalized(Xtr, ytr, Xte, yte):
    return _selector(Xtr, ytr, Xte, yte, relaxed=False)


def ours_auto(Xtr, ytr, Xte, yte):
    return _selector(Xtr, ytr, Xte, yte, lambda_max="auto")


def ours_penalized_auto(Xtr, ytr, Xte, yte):
    return _selector(Xtr, ytr, Xte, yte, relaxed=False, lambda_max="auto")


def grid(Xtr, ytr, Xte, yte):
    search = GridSearchCV(SoftRegRegressor(random_state=0), {"lambda_features": GRID},
                          cv=5, n_jobs=2).fit(Xtr, ytr)
    return (_kept_columns(search.best_estimator_), search.score(Xte, yte),
            {"best_lambda": search.best_params_["lambda_features"]})


def lasso(Xtr, ytr, Xte, yte):
    est = LassoCV(cv=5, n_jobs=2, random_state=0).fit(Xtr, ytr)
    return est.coef_ != 0, est.score(Xte, yte), {}


def forest(Xtr, ytr, Xte, yte):
    sfm = SelectFromModel(RandomForestRegressor(n_jobs=2, random_state=0)).fit(Xtr, ytr)
    keep = sfm.get_support()
    est = SoftRegRegressor(random_state=0).fit(Xtr[:, keep], ytr)
    return keep, est.score(Xte[:, keep], yte), {}


def lassonet(Xtr, ytr, Xte, yte):
    from lassonet import LassoNetRegressorCV

    est = LassoNetRegressorCV().fit(Xtr, ytr)
    keep = est.best_selected_.cpu().numpy().astype(bool)
    return keep, r2_score(yte, np.ravel(est.predict(Xte))), {}


METHODS = {
    "dense": ("dense SoftRegRegressor (all inputs)", dense),
    "ours": ("SoftRegSelectorCV (defaults: relaxed=True)", ours),
    "ours-penalized": ("SoftRegSelectorCV(relaxed=False)", ours_penalized),
    "ours-auto": ("SoftRegSelectorCV(lambda_max='auto')", ours_auto),
    "ours-penalized-auto": ("SoftRegSelectorCV(relaxed=False, lambda_max='auto')",
                            ours_penalized_auto),
    "grid": ("GridSearchCV over lambda_features", grid),
    "lasso": ("LassoCV", lasso),
    "forest": ("SelectFromModel(RandomForest) + SoftRegRegressor", forest),
    "lassonet": ("LassoNetRegressorCV()", lassonet),
}
DEFAULT_METHODS = ("dense", "ours", "ours-penalized", "ours-auto", "grid", "lasso", "forest",
                   "lassonet")


def _load(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"rows": []}


def _machine():
    return f"{platform.platform()}, {os.cpu_count()} CPUs"


def markdown(results):
    """The Markdown report of every stored row, one table per problem."""
    lines = [
        "# Feature selection with many noise inputs (issue 39)", "",
        "Generated by `benchmarks/selection.py` from the rows in `benchmarks/selection.json`. "
        "Timings come from a shared 2-core machine (another user's jobs ran beside some of "
        "them), torch on one thread per process, `n_jobs=2` where a method has it: compare "
        "wall times between rows measured on the same date only. Each row names its date "
        "and machine below the tables.", "",
    ]
    intro = {
        "friedman1": "`make_friedman1(3000, n_features=50, noise=1.0, random_state=seed)`, "
                     "75/25 split (same for every method), standardized: 5 informative "
                     "inputs, 45 noise.",
        "real": f"`{REAL_DATASET}` of `benchmarks/real_data.py` (75/25 split, its one-hot "
                f"preprocessing: 58 real columns) with {N_PERMUTED} extra columns, each a "
                "seeded random permutation of a real column, then all standardized. "
                "\"informative\" is here the real columns kept (not all are needed); "
                "\"noise\" the permuted ones.",
    }
    order = {key: i for i, key in enumerate(METHODS)}
    machines = {}
    for problem in PROBLEMS:
        rows = [r for r in results["rows"] if r["problem"] == problem and r["method"] in METHODS]
        if not rows:
            continue
        rows.sort(key=lambda r: (r["seed"], order.get(r["method"], 99)))
        lines += [f"## {problem}", "", intro[problem], "",
                  "| method | seed | informative kept | noise kept | test R² | wall (s) | "
                  "chosen λ | λ values / relaxed refits | measured |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lam = r["extra"].get("best_lambda")
            lam = "" if lam is None else f"{lam:.3g}"
            n_lam = r["extra"].get("n_lambdas")
            path = "" if n_lam is None else f"{n_lam} / {r['extra'].get('n_relaxed_fits', 0)}"
            machines.setdefault(r["machine"], []).append(r["date"])
            lines.append(
                f"| {METHODS[r['method']][0]} | {r['seed']} | {r['informative']}/{r['n_informative']} "
                f"| {r['noise']}/{r['n_noise']} | {r['r2']:.4f} | {r['wall']:.1f} | {lam} | {path} | "
                f"{r['date']} |")
        lines.append("")
    lines += ["Machines: " + "; ".join(f"{m} ({min(d)} to {max(d)})" for m, d in machines.items())
              + ".", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=["friedman1", "real", "all"], default="all")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    parser.add_argument("--quick", action="store_true", help="seed 0, nothing written")
    parser.add_argument("--results", default="benchmarks/selection.json")
    parser.add_argument("--out", default="benchmarks/selection.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if "lassonet" in methods:
        try:
            import lassonet  # noqa: F401
        except ImportError:
            print("lassonet is not importable: skipped", flush=True)
            methods.remove("lassonet")
    problems = list(PROBLEMS) if args.problem == "all" else [args.problem]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    results = _load(args.results)
    for problem in problems:
        for seed in seeds:
            (Xtr, Xte, ytr, yte), n_inf = PROBLEMS[problem](seed)
            for key in methods:
                t = time.perf_counter()
                keep, r2, extra = METHODS[key][1](Xtr, ytr, Xte, yte)
                wall = time.perf_counter() - t
                row = {"problem": problem, "method": key, "seed": seed,
                       "informative": int(keep[:n_inf].sum()), "n_informative": n_inf,
                       "noise": int(keep[n_inf:].sum()), "n_noise": int(len(keep) - n_inf),
                       "r2": float(r2), "wall": wall, "extra": extra,
                       "date": str(datetime.date.today()), "machine": _machine()}
                print(f"{problem}, {METHODS[key][0]}, seed {seed}: {row['informative']}/{n_inf}, "
                      f"{row['noise']}/{row['n_noise']}, R² {r2:.4f}, {wall:.1f} s {extra}",
                      flush=True)
                if args.quick:
                    continue
                results["rows"] = [r for r in results["rows"]
                                   if (r["problem"], r["method"], r["seed"]) != (problem, key, seed)]
                results["rows"].append(row)
                with open(args.results, "w") as f:
                    json.dump(results, f, indent=1)
                with open(args.out, "w") as f:
                    f.write(markdown(results))


if __name__ == "__main__":
    main()
