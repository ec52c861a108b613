"""Neural feature selection with ``lambda_features`` on make_friedman1.

20 standardized inputs, of which x0..x4 are informative
(y = 10 sin(pi x0 x1) + 20 (x2 - 0.5)**2 + 10 x3 + 5 x4 + noise), n = 3000
(75% train, 25% test). The script fits SoftRegRegressor over a log grid of
``lambda_features`` (plus 0), and compares the selection with LassoCV and with
SelectFromModel(RandomForestRegressor()) on the same split. It writes

- ``results.md``: the selection table per seed, the comparison table and the
  run's settings;
- ``selection.csv``, ``comparison.csv`` and ``run.rst``: the same, for the docs;
- ``selection_path.png``: :func:`sk_softreg.plot.plot_selection_path` for seed 0.

The comparison also refits SoftRegRegressor(lambda_features=0) on the inputs
that each selector kept, including ``lambda_features=--refit-lambda`` (0.02,
the value read off the selection table: an optimistic choice, as it looks at
the test split and at which inputs are truly informative).

Run::

    python examples/feature_selection_friedman.py --out docs/feature_selection
    python examples/feature_selection_friedman.py --quick --out /tmp/fs   # a 1-minute check
"""

import argparse
import csv
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
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sk_softreg import SoftRegRegressor
from sk_softreg.modules import GaussianMLP

N_INFORMATIVE = 5
GRID = [0.0, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1]
# Every setting the result depends on, explicitly: defaults may change.
PARAMS = {
    "module": GaussianMLP,
    "module__hidden_units": (64,),
    "module__dropout": 0.0,
    "optimizer": torch.optim.Adam,
    "lr": 2e-3,
    "max_epochs": 200,
    "batch_size": 256,
    "lambda1": 0.0,
    "lambda2": 1e-3,
    "alpha": 0.0,
    "normalize_y": True,
    "penalize": "weights",
    "train_split": None,
    "early_stopping": False,  # all 200 epochs on all training rows
    "device": "cpu",
}


def load(seed, n_samples):
    X, y = make_friedman1(n_samples=n_samples, n_features=20, noise=1.0, random_state=seed)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=seed)
    scaler = StandardScaler().fit(X_tr)
    return scaler.transform(X_tr), scaler.transform(X_te), y_tr, y_te


def selection_row(method, lam, kept, r2, seed, seconds):
    kept = np.asarray(sorted(kept))
    return {
        "seed": seed,
        "method": method,
        "lambda_features": lam,
        "inputs_kept": len(kept),
        "informative_kept": int(np.sum(kept < N_INFORMATIVE)),
        "noise_kept": int(np.sum(kept >= N_INFORMATIVE)),
        "test_r2": r2,
        "kept": " ".join(f"x{j}" for j in kept),
        "seconds": seconds,
    }


def run_grid(seed, data, params, grid):
    X_tr, X_te, y_tr, y_te = data
    rows, fits = [], []
    for lam in grid:
        start = time.perf_counter()
        reg = SoftRegRegressor(lambda_features=lam, random_state=seed, **params).fit(X_tr, y_tr)
        seconds = time.perf_counter() - start
        kept = np.flatnonzero(reg.feature_importances_ > 0)
        rows.append(selection_row("SoftRegRegressor", lam, kept,
                                  r2_score(y_te, reg.predict(X_te)), seed, seconds))
        fits.append(reg)
        print(f"seed {seed} lambda_features={lam:g}: kept {rows[-1]['kept']}, "
              f"R2 {rows[-1]['test_r2']:.4f} ({seconds:.1f} s)", flush=True)
    return rows, fits


def run_baselines(seed, data, params, own):
    """LassoCV and SelectFromModel(RandomForestRegressor()), and the MLP on their inputs.

    ``own`` is the grid row whose inputs are refit too.
    """
    X_tr, X_te, y_tr, y_te = data
    rows = []
    start = time.perf_counter()
    lasso = LassoCV(cv=5, random_state=seed).fit(X_tr, y_tr)
    rows.append(selection_row("LassoCV", None, np.flatnonzero(lasso.coef_ != 0),
                              lasso.score(X_te, y_te), seed, time.perf_counter() - start))
    start = time.perf_counter()
    forest = SelectFromModel(RandomForestRegressor(random_state=seed, n_jobs=1)).fit(X_tr, y_tr)
    forest_r2 = forest.estimator_.score(X_te, y_te)
    rows.append(selection_row("SelectFromModel(RandomForestRegressor())", None,
                              np.flatnonzero(forest.get_support()), forest_r2, seed,
                              time.perf_counter() - start))
    selectors = [*rows, {**own, "method": f"lambda_features={own['lambda_features']:g}"}]
    for row in selectors:
        cols = [int(c[1:]) for c in row["kept"].split()]
        start = time.perf_counter()
        reg = SoftRegRegressor(lambda_features=0.0, random_state=seed, **params)
        reg.fit(X_tr[:, cols], y_tr)
        rows.append(selection_row(f"SoftRegRegressor on the {row['method']} inputs", 0.0, cols,
                                  r2_score(y_te, reg.predict(X_te[:, cols])), seed,
                                  time.perf_counter() - start))
    return rows


def fmt(value, digits=4):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if digits else f"{value:g}"
    return str(value)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_results(out, rows, args, params, seconds):
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    run = [
        f"Mode: {'quick' if args.quick else 'full'}; n = {args.n_samples} (75% train, 25% test); "
        f"seeds {', '.join(map(str, args.seeds))}; {seconds:.0f} s on {machine} "
        "(torch.set_num_threads(1)).",
        "",
        "Settings: " + ", ".join(f"{k}={getattr(v, '__name__', v)!r}" for k, v in params.items()
                                 if k != "device") + ".",
        "",
    ]
    with open(os.path.join(out, "run.rst"), "w") as f:
        f.write("\n".join(line.replace("*", "\\*") for line in run))
    lines = list(run)
    grid_rows = [r for r in rows if r["method"] == "SoftRegRegressor"]
    selection, comparison = [], []
    for seed in args.seeds:
        mine = [r for r in grid_rows if r["seed"] == seed]
        base = next(r["test_r2"] for r in mine if r["lambda_features"] == 0.0)
        lines += [
            f"Seed {seed}: SoftRegRegressor over lambda_features",
            "",
            "| lambda_features | inputs kept | informative kept (of 5) | noise kept (of 15) "
            "| test R² | ΔR² vs 0 | inputs |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in mine:
            selection.append([seed, fmt(r["lambda_features"], 0), r["inputs_kept"],
                              r["informative_kept"], r["noise_kept"], f"{r['test_r2']:.4f}",
                              f"{r['test_r2'] - base:+.4f}",
                              r["kept"] if r["inputs_kept"] < 20 else "all"])
            lines.append(
                f"| {fmt(r['lambda_features'], 0)} | {r['inputs_kept']} | {r['informative_kept']} "
                f"| {r['noise_kept']} | {r['test_r2']:.4f} | {r['test_r2'] - base:+.4f} "
                f"| {r['kept'] if r['inputs_kept'] < 20 else 'all'} |"
            )
        lines.append("")
    others = [r for r in rows if r["method"] != "SoftRegRegressor"]
    lines += [
        "Other selectors on the same splits (R² of the selector's own model, or of "
        "SoftRegRegressor(lambda_features=0) refit on the selected inputs)",
        "",
        "| seed | method | inputs kept | informative kept | noise kept | test R² | inputs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in others:
        comparison.append([r["seed"], r["method"], r["inputs_kept"], r["informative_kept"],
                           r["noise_kept"], f"{r['test_r2']:.4f}", r["kept"]])
        lines.append(
            f"| {r['seed']} | {r['method']} | {r['inputs_kept']} | {r['informative_kept']} "
            f"| {r['noise_kept']} | {r['test_r2']:.4f} | {r['kept']} |"
        )
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    write_csv(os.path.join(out, "selection.csv"),
              ["seed", "lambda_features", "inputs kept", "informative kept (of 5)",
               "noise kept (of 15)", "test R²", "ΔR² vs 0", "inputs"], selection)
    write_csv(os.path.join(out, "comparison.csv"),
              ["seed", "method", "inputs kept", "informative kept", "noise kept", "test R²",
               "inputs"], comparison)


def plot(out, fits):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sk_softreg.plot import plot_selection_path

    fig, ax = plt.subplots(figsize=(8, 4.2))
    plot_selection_path(fits, ax=ax, highlight=range(N_INFORMATIVE))
    ax.set_title("make_friedman1, seed 0: x0..x4 informative, x5..x19 noise")
    legend = ax.get_legend()
    legend.set_loc("upper left")
    legend.set_bbox_to_anchor((1.13, 1.0))  # right of the importance axis
    fig.savefig(os.path.join(out, "selection_path.png"), dpi=110, bbox_inches="tight")
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="feature_selection_results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="n=1000, 40 epochs, seed 0")
    parser.add_argument("--refit-lambda", type=float, default=0.02,
                        help="refit lambda_features=0 on the inputs kept at this value")
    args = parser.parse_args()
    args.n_samples = 3000
    params = dict(PARAMS)
    if args.quick:
        args.n_samples, args.seeds = 1000, [0]
        params["max_epochs"] = 40
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    rows, first_fits = [], None
    for seed in args.seeds:
        data = load(seed, args.n_samples)
        grid_rows, fits = run_grid(seed, data, params, GRID)
        rows += grid_rows
        own = next(r for r in grid_rows if r["lambda_features"] == args.refit_lambda)
        rows += run_baselines(seed, data, params, own)
        first_fits = first_fits or fits
    write_results(args.out, rows, args, params, time.perf_counter() - start)
    plot(args.out, first_fits)
    print(open(os.path.join(args.out, "results.md")).read())


if __name__ == "__main__":
    main()
