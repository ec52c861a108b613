"""Uncertainty study: are SoftRegRegressor's predictive intervals calibrated?

With ``alpha > 0`` :class:`sk_softreg.SoftRegRegressor` trains a variance head
against the soft target ``N(y, tau**2)`` and ``predict(X, return_std=True)``
returns a per-sample sigma; with ``alpha = 0`` sigma is the training residual
std (one value). This script measures, on a test split, for
``alpha`` in {0, 0.1, 1} and ``tau`` in {0.05, 0.2}:

* RMSE of the mean;
* Gaussian NLL ``mean(0.5 log(2 pi sigma^2) + (y - mu)^2 / (2 sigma^2))``;
* the empirical coverage of the central 90% interval ``mu ± 1.645 sigma``.

Data: a synthetic set ``y = sin(2x) + x/2 + eps``, ``eps ~ N(0, (0.1 + 0.4|x|)^2)``,
``x ~ U(-3, 3)``, n = 1000 (25% test); and sklearn's diabetes (standardized
features, 25% test). ``alpha = 0`` does not use ``tau``: its two rows are the
same model. Metrics are means over seeds.

Outputs (``--out``, default ``docs/uncertainty``): ``results.md``,
``results.csv``, ``goal.rst`` and ``synthetic_band.png`` (mean ± 2 sigma).
"""

import argparse
import csv
import os
import platform
import sys
import time
from pathlib import Path

try:
    import matplotlib
except ImportError:
    sys.exit('uncertainty_regression.py draws figures with matplotlib: pip install -e ".[plot]"')
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sk_softreg import SoftRegRegressor

ALPHAS = (0.0, 0.1, 1.0)
TAUS = (0.05, 0.2)
Z90 = 1.6448536269514722
# mode: (seeds, max_epochs). Numbers from quick and smoke are not results.
MODES = {
    "full": (5, 150),
    "quick": (2, 60),
    "smoke": (1, 3),
}  # standard normal 95% quantile: central 90% interval

# Module settings per data set. Diabetes uses the regressor's defaults (dropout
# 0.5 on its 331 training rows, batch 128, early stopping with max_epochs as the
# cap); the 1-D synthetic curve needs more capacity and no dropout (dropout noise
# inflates the residuals the variance head must learn).
DATASET_PARAMS = {
    "synthetic": {"module__hidden_units": (64, 64), "module__dropout": 0.0, "lr": 3e-3},
    "diabetes": {},
}


def make_heteroscedastic(n_samples=1000, random_state=0):
    """1-D data whose noise std grows with ``|x|``.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of samples.
    random_state : int, default=0
        Seed of the generator.

    Returns
    -------
    X : ndarray of shape (n_samples, 1)
    y : ndarray of shape (n_samples,)
    noise_std : ndarray of shape (n_samples,)
        The true noise std of each sample.

    Examples
    --------
    >>> X, y, std = make_heteroscedastic(50)
    >>> X.shape, y.shape, bool(std.min() >= 0.1)
    ((50, 1), (50,), True)
    """
    rng = np.random.default_rng(random_state)
    x = rng.uniform(-3, 3, n_samples)
    noise_std = 0.1 + 0.4 * np.abs(x)
    y = np.sin(2 * x) + x / 2 + rng.normal(0, noise_std)
    return x[:, None].astype(np.float32), y, noise_std


def gaussian_metrics(y, mean, std):
    """RMSE, Gaussian NLL and 90% coverage of predictions ``N(mean, std**2)``.

    Parameters
    ----------
    y, mean, std : array-like of shape (n_samples,)
        Targets, predicted means and predicted standard deviations.

    Returns
    -------
    metrics : dict
        ``rmse``, ``nll`` (mean per sample) and ``coverage90`` (fraction of
        ``y`` inside ``mean ± 1.645 std``).

    Examples
    --------
    >>> m = gaussian_metrics([0.0, 3.0], [0.0, 0.0], [1.0, 1.0])
    >>> round(m["rmse"], 3), m["coverage90"]
    (2.121, 0.5)
    """
    y, mean, std = (np.ravel(np.asarray(a, dtype=float)) for a in (y, mean, std))
    resid = y - mean
    nll = 0.5 * np.log(2 * np.pi * std**2) + resid**2 / (2 * std**2)
    return {
        "rmse": float(np.sqrt(np.mean(resid**2))),
        "nll": float(np.mean(nll)),
        "coverage90": float(np.mean(np.abs(resid) <= Z90 * std)),
    }


def _datasets(n_synthetic):
    X, y, _ = make_heteroscedastic(n_synthetic, random_state=0)
    yield "synthetic", train_test_split(X, y, test_size=0.25, random_state=0)
    Xd, yd = load_diabetes(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(Xd, yd, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(Xtr)
    yield (
        "diabetes",
        (
            scaler.transform(Xtr).astype(np.float32),
            scaler.transform(Xte).astype(np.float32),
            ytr,
            yte,
        ),
    )


def _plot_band(est, X_train, y_train, out):
    grid = np.linspace(-3, 3, 300, dtype=np.float32)[:, None]
    mean, std = est.predict(grid, return_std=True)
    true_std = 0.1 + 0.4 * np.abs(grid[:, 0])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.scatter(X_train[:, 0], y_train, s=4, color="grey", alpha=0.5, label="training data")
    ax.plot(grid[:, 0], mean, color="C0", label="predicted mean")
    ax.fill_between(
        grid[:, 0], mean - 2 * std, mean + 2 * std, color="C0", alpha=0.25, label="± 2 predicted σ"
    )
    f = np.sin(2 * grid[:, 0]) + grid[:, 0] / 2
    ax.plot(grid[:, 0], f - 2 * true_std, "k--", lw=0.8, label="± 2 true σ")
    ax.plot(grid[:, 0], f + 2 * true_std, "k--", lw=0.8)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"SoftRegRegressor, alpha={est.alpha:g}, tau={est.tau:g}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "synthetic_band.png", dpi=110)
    plt.close(fig)


def _run(seeds, epochs):
    """Fit every (data set, alpha, tau, seed); return summary rows and the band model."""
    rows, band_est, band_data = [], None, None
    for name, (X_train, X_test, y_train, y_test) in _datasets(1000):
        for alpha in ALPHAS:
            for tau in TAUS:
                metrics = []
                for seed in seeds:
                    est = SoftRegRegressor(
                        alpha=alpha,
                        tau=tau,
                        max_epochs=epochs,
                        random_state=seed,
                        device="cpu",
                        **DATASET_PARAMS[name],
                    ).fit(X_train, y_train)
                    metrics.append(gaussian_metrics(y_test, *est.predict(X_test, return_std=True)))
                    if name == "synthetic" and alpha == 0.1 and tau == 0.05 and seed == 0:
                        band_est, band_data = est, (X_train, y_train)
                rows.append(
                    {
                        "data": name,
                        "n_train": len(y_train),
                        "alpha": alpha,
                        "tau": tau,
                        **{k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]},
                        "coverage90_min": min(m["coverage90"] for m in metrics),
                        "coverage90_max": max(m["coverage90"] for m in metrics),
                    }
                )
    return rows, band_est, band_data


def main(argv=None):
    """Run the study and write its table, goal line and figure.

    Parameters
    ----------
    argv : list of str or None, default=None
        Command-line arguments; ``None`` reads ``sys.argv``.

    Returns
    -------
    out : pathlib.Path
        The output directory.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="2 seeds, 60 epochs")
    group.add_argument("--smoke", action="store_true", help="seconds-long pipeline check")
    parser.add_argument("--out", default="docs/uncertainty", help="output directory")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    seeds, epochs = MODES[mode]
    seeds = range(seeds)

    # The MLP is tiny: a second intra-op thread only adds synchronization cost.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows, band_est, band_data = _run(seeds, epochs)
    finally:
        torch.set_num_threads(threads)
    _plot_band(band_est, *band_data, out)
    elapsed = time.perf_counter() - start

    with open(out / "results.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(
            {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows
        )

    syn = [r for r in rows if r["data"] == "synthetic"]
    base_nll = next(r["nll"] for r in syn if r["alpha"] == 0)
    goal_rows = [r for r in syn if r["alpha"] > 0]
    met = [r for r in goal_rows if 0.85 <= r["coverage90"] <= 0.95 and r["nll"] < base_nll]
    goal = (
        f"**Goal (synthetic, alpha > 0: 90% coverage in 0.85-0.95 and NLL below alpha = 0): "
        f"met by {len(met)} of {len(goal_rows)} settings.** alpha = 0: NLL {base_nll:.3f}, "
        f"coverage {next(r['coverage90'] for r in syn if r['alpha'] == 0):.3f}; "
        + "; ".join(
            f"alpha={r['alpha']:g}, tau={r['tau']:g}: NLL {r['nll']:.3f}, coverage "
            f"{r['coverage90']:.3f}"
            for r in goal_rows
        )
        + "."
    )
    setup = (
        f"Mode: {mode}; {len(seeds)} seeds; max_epochs={epochs}; "
        f"synthetic module settings {DATASET_PARAMS['synthetic']}, diabetes defaults; run time "
        f"{elapsed:.0f} s on {platform.machine()} ({os.cpu_count()} CPU cores), 1 torch thread "
        "(set by the script for these tiny MLPs), CPU."
    )
    with open(out / "goal.rst", "w", encoding="utf-8") as fh:
        fh.write(setup + "\n\n" + goal + "\n")
    header = ["data", "n_train", "alpha", "tau", "rmse", "nll", "coverage90", "coverage90 range"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['n_train']} | {r['alpha']:g} | {r['tau']:g} | {r['rmse']:.3f} | "
            f"{r['nll']:.3f} | {r['coverage90']:.3f} | "
            f"{r['coverage90_min']:.3f}-{r['coverage90_max']:.3f} |"
        )
    with open(out / "results.md", "w", encoding="utf-8") as fh:
        fh.write(
            "# Uncertainty study\n\n" + setup + "\n\n" + goal + "\n\n" + "\n".join(lines) + "\n"
        )
    return out


if __name__ == "__main__":
    main()
