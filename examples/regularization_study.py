"""Regularization study: do λ1, λ2 and α help a small CNN on sklearn's digits?

Measures, with the project's own :class:`sk_softreg.SoftRegCNNClassifier`,
the claims of the source documents (L1 and L2 reduce overfitting, L1 makes
weights sparse, a KL term improves generalization) and their calibration cost.

Protocol
--------
* digits (pixels / 16), one fixed stratified 20% test split (``random_state=0``);
* training subsets of 10%, 20% and 100% of the remaining data, drawn
  stratified with the seed; every configuration sees the same subset and the
  same network initialization for a given seed, so differences are paired;
* configurations: none; λ2 ∈ {1e-4, 1e-3}; proximal λ1 ∈ {3e-6, 1e-5, 3e-5, 5e-5, 1e-4};
  α ∈ {0.05, 0.1, 0.3} for both ``kl`` modes; data augmentation
  (``train_transform``, :data:`AUGMENT`) alone and with label smoothing
  α = 0.1; one combined setting chosen by ``GridSearchCV(cv=3)`` over
  :data:`CV_GRID` on the full training split only (the test split is never
  used for a choice), each candidate trained like the final model
  (``final_epochs``, ``final_channels``);
* metrics on the test split: accuracy, paired Δ accuracy vs none, NLL, ECE
  (15 equal-width bins of the top-class confidence) and ``sparsity_``;
* calibration: each model of ``calibration_configs`` is trained on 80% of
  the training split and ``CalibratedClassifierCV(FrozenEstimator(model),
  method="temperature")`` is fitted on the held-out 20%; test ECE before/after.

Outputs (``--out``, default ``docs/study``): ``results.md`` (the findings and
all tables), ``summary.csv``, ``calibration.csv``, ``findings.rst``,
``raw.csv`` (one row per fit), ``accuracy_vs_size.png`` and
``accuracy_vs_sparsity_l1.png``.

* max_epochs 100 / 50 / 30 on the 10% / 20% / 100% subsets (see ``MODES``);
  the fits run in parallel, one torch thread each (``--n-jobs``).

Needs matplotlib (``pip install -e ".[plot]"``).

Run ``python examples/regularization_study.py`` (full, 5 seeds) or with
``--quick`` (2 seeds, few epochs, fewer configurations).
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
    sys.exit('regularization_study.py draws figures with matplotlib: pip install -e ".[plot]"')
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, ParameterGrid, StratifiedKFold, train_test_split
from torchvision.transforms import v2

from sk_softreg import SoftRegCNNClassifier

SUBSETS = (0.1, 0.2, 1.0)

# Data augmentation: a random small rotation and shift of each training image,
# drawn anew every epoch (``train_transform``; never applied at prediction).
# In a v2.Compose so that scikit-learn's clone (GridSearchCV) deep-copies it: a
# bare RandomAffine has a get_params of its own that clone takes for an estimator's.
AUGMENT = v2.Compose([v2.RandomAffine(degrees=8, translate=(0.1, 0.1))])


def config_name(params):
    """Short name of a setting, e.g. ``"l2=1e-4 + ls a=0.1 + aug"``.

    Parameters
    ----------
    params : dict
        ``SoftRegCNNClassifier`` parameters; zero penalties and a ``None``
        ``train_transform`` count as absent.

    Returns
    -------
    name : str
        ``"none"`` when no regularizer is set.

    Examples
    --------
    >>> config_name({"lambda2": 1e-4, "alpha": 0.1, "train_transform": AUGMENT})
    'l2=1e-4 + ls a=0.1 + aug'
    """
    parts = []
    for key, short in (("lambda1", "l1"), ("lambda2", "l2")):
        if params.get(key):
            parts.append(f"{short}={params[key]:.0e}".replace("e-0", "e-"))
    if params.get("alpha"):
        kl = params.get("kl", "label_smoothing")
        parts.append(f"{'ls' if kl == 'label_smoothing' else 'cp'} a={params['alpha']:g}")
    if params.get("train_transform") is not None:
        parts.append("aug")
    return " + ".join(parts) or "none"


# (name, family, parameters); "none" must come first.
CONFIGS = [
    (config_name(p), family, p)
    for family, p in [
        ("none", {}),
        *[("lambda2", {"lambda2": l2}) for l2 in (1e-4, 1e-3)],
        *[("lambda1", {"lambda1": l1}) for l1 in (3e-6, 1e-5, 3e-5, 5e-5, 1e-4)],
        *[
            (f"alpha ({kl})", {"alpha": a, "kl": kl})
            for kl in ("label_smoothing", "confidence_penalty")
            for a in (0.05, 0.1, 0.3)
        ],
        ("augmentation", {"train_transform": AUGMENT}),
        ("augmentation", {"alpha": 0.1, "train_transform": AUGMENT}),
    ]
]
# The combined setting's search space (full training split, cv=3). "none" is a
# candidate too, so CV may decide that no regularization is best.
CV_GRID = {
    "lambda1": [0.0, 1e-5],
    "lambda2": [0.0, 1e-4],
    "alpha": [0.0, 0.1, 0.3],
    "train_transform": [None, AUGMENT],
}

# Run modes. "full" is the study; "quick" (< 2 min on 2 idle cores) checks the
# whole pipeline with fewer seeds, epochs and configurations; "smoke" is the
# test suite's seconds-long run. Numbers from quick and smoke are not results.
# "epochs" is max_epochs per training-subset fraction: a fixed epoch count
# gives the 10% subset (3 batches per epoch) about 8x fewer optimizer steps
# than the full split, which leaves even the unregularized model far from
# converged; more epochs on the small subsets give every configuration a fair
# chance. The calibration fits use the full-split value.
# "final_epochs" and "final_channels" are the CV search's fits and the
# CV-selected setting's final fits on the full training split (goal a): a
# longer run of a wider network, fixed in advance, not chosen on the test split.
MODES = {
    "full": {
        "seeds": 5,
        "epochs": {0.1: 100, 0.2: 50, 1.0: 30},
        "final_epochs": 60,
        "final_channels": (64, 128),
        "configs": None,  # all of CONFIGS
        "cv_grid": CV_GRID,
        "calibration_configs": ("none", "ls a=0.1", "ls a=0.3", "cp a=0.1", "cp a=0.3"),
        "calibration_seeds": 3,
    },
    "quick": {
        "seeds": 2,
        "epochs": {0.1: 20, 0.2: 10, 1.0: 10},
        "final_epochs": 10,
        "final_channels": (32, 64),
        "configs": ("none", "l2=1e-3", "l1=1e-4", "ls a=0.1", "cp a=0.1", "ls a=0.1 + aug"),
        "cv_grid": {"alpha": [0.1], "train_transform": [None, AUGMENT]},
        "calibration_configs": ("none", "ls a=0.1", "cp a=0.1"),
        "calibration_seeds": 2,
    },
    "smoke": {
        "seeds": 1,
        "epochs": {0.1: 2, 0.2: 2, 1.0: 2},
        "final_epochs": 2,
        "final_channels": (32, 64),
        "configs": ("none", "l1=1e-4", "ls a=0.1", "cp a=0.1"),
        "cv_grid": {"alpha": [0.1]},
        "calibration_configs": ("none", "ls a=0.1"),
        "calibration_seeds": 1,
    },
}


def expected_calibration_error(y_true, proba, n_bins=15):
    """Top-label expected calibration error with equal-width confidence bins.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels as column indices into ``proba`` (0..K-1).
    proba : array-like of shape (n_samples, n_classes)
        Predicted class probabilities.
    n_bins : int, default=15
        Number of equal-width bins over the confidence range [0, 1].

    Returns
    -------
    ece : float
        ``sum_b |B_b| / n * |accuracy(B_b) - confidence(B_b)|``.

    Examples
    --------
    >>> import numpy as np
    >>> expected_calibration_error([0, 1], np.array([[0.9, 0.1], [0.8, 0.2]]))
    0.45
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=float)
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(float)
    # Bin b holds confidences in (b/n_bins, (b+1)/n_bins]; confidence 0 goes to bin 0.
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(round(ece, 12))


def _load_split():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)


def _subset(X, y, fraction, seed):
    if fraction >= 1.0:
        return X, y
    Xs, _, ys, _ = train_test_split(X, y, train_size=fraction, stratify=y, random_state=seed)
    return Xs, ys


def _fit_evaluate(params, X_fit, y_fit, X_test, y_test, X_cal=None, y_cal=None):
    """Fit one model (one torch thread) and return its test metrics.

    With ``X_cal`` it also returns the metrics after temperature scaling on
    ``(X_cal, y_cal)``. Runs in a joblib worker: one model per core.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        est = SoftRegCNNClassifier(device="cpu", **params).fit(X_fit, y_fit)
    finally:
        torch.set_num_threads(threads)
    metrics = {**_evaluate(est, X_test, y_test), "sparsity": float(est.sparsity_)}
    if X_cal is None:
        return metrics
    cal = CalibratedClassifierCV(FrozenEstimator(est), method="temperature")
    return metrics, _evaluate(cal.fit(X_cal, y_cal), X_test, y_test)


def _evaluate(est, X_test, y_test):
    proba = est.predict_proba(X_test)
    y_idx = np.searchsorted(est.classes_, y_test)
    return {
        "accuracy": float(np.mean(est.classes_[proba.argmax(axis=1)] == y_test)),
        "nll": float(log_loss(y_test, proba, labels=est.classes_)),
        "ece": expected_calibration_error(y_idx, proba),
    }


def _select_combined(X_train, y_train, grid, final_params, n_jobs):
    """GridSearchCV(cv=3) over ``grid`` on the training split only.

    Every candidate trains as the final model will (``final_params``: its
    ``max_epochs`` and ``module__channels``), so the choice ranks settings as
    they will be used; a shorter CV budget penalizes the settings that need
    longer training, such as augmentation.
    """
    search = GridSearchCV(
        SoftRegCNNClassifier(random_state=0, device="cpu", **final_params),
        grid,
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        scoring="accuracy",
        refit=False,
        n_jobs=n_jobs,
    )
    search.fit(X_train, y_train)
    chosen = {k: v for k, v in search.best_params_.items() if v is not None and v != 0.0}
    return chosen, float(search.best_score_)


def _mean_sd(values):
    values = np.asarray(values, dtype=float)
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return values.mean(), sd


def _summarize(raw, configs, subsets, n_by_subset):
    """One summary row per (config, subset), Δ paired with "none" by seed."""
    rows = []
    for name, family, _ in configs:
        for fraction in subsets:
            mine = {r["seed"]: r for r in raw if r["config"] == name and r["subset"] == fraction}
            base = {r["seed"]: r for r in raw if r["config"] == "none" and r["subset"] == fraction}
            seeds = sorted(mine)
            acc = _mean_sd([mine[s]["accuracy"] for s in seeds])
            delta = _mean_sd([mine[s]["accuracy"] - base[s]["accuracy"] for s in seeds])
            n_wins = sum(mine[s]["accuracy"] > base[s]["accuracy"] for s in seeds)
            rows.append(
                {
                    "config": name,
                    "family": family,
                    "subset": fraction,
                    "n_train": n_by_subset[fraction],
                    "seeds": len(seeds),
                    "acc_mean": acc[0],
                    "acc_sd": acc[1],
                    "delta_mean": delta[0],
                    "delta_sd": delta[1],
                    "wins": n_wins,
                    "nll": float(np.mean([mine[s]["nll"] for s in seeds])),
                    "ece": float(np.mean([mine[s]["ece"] for s in seeds])),
                    "sparsity": float(np.mean([mine[s]["sparsity"] for s in seeds])),
                }
            )
    return rows


def _fmt_summary(row):
    return {
        "config": row["config"],
        "train size": f"{row['subset']:.0%} (n={row['n_train']})",
        "test accuracy %": f"{100 * row['acc_mean']:.2f} ± {100 * row['acc_sd']:.2f}",
        "Δ vs none (pts)": (
            "—"
            if row["config"] == "none"
            else f"{100 * row['delta_mean']:+.2f} ± {100 * row['delta_sd']:.2f}"
            f" ({row['wins']}/{row['seeds']} wins)"
        ),
        "NLL": f"{row['nll']:.3f}",
        "ECE": f"{row['ece']:.3f}",
        "zero weights": f"{row['sparsity']:.1%}",
    }


def _markdown_table(rows):
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plot_accuracy_vs_size(summary, out):
    families = [f for f in dict.fromkeys(r["family"] for r in summary) if f != "none"]
    ncols = min(3, len(families))
    nrows = -(-len(families) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.8 * ncols, 3.3 * nrows), sharey=True, squeeze=False
    )
    for ax in axes.flat[len(families) :]:
        ax.set_visible(False)
    axes = axes.flat
    base = [r for r in summary if r["config"] == "none"]
    for ax, family in zip(axes, families):
        series = [("none", base)] + [
            (name, [r for r in summary if r["config"] == name])
            for name in dict.fromkeys(r["config"] for r in summary if r["family"] == family)
        ]
        for name, rows in series:
            ax.errorbar(
                [r["n_train"] for r in rows],
                [100 * r["acc_mean"] for r in rows],
                yerr=[100 * r["acc_sd"] for r in rows],
                marker="o",
                capsize=3,
                label=name,
                color="black" if name == "none" else None,
                linestyle="--" if name == "none" else "-",
            )
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks([r["n_train"] for r in base], [str(r["n_train"]) for r in base])
        ax.set_title(family, fontsize=9)
        ax.set_xlabel("training samples")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[::ncols]:
        ax.set_ylabel("test accuracy (%), mean ± sd")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_size.png", dpi=110)
    plt.close(fig)


def _plot_accuracy_vs_sparsity(raw, out):
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    configs = [c for c in dict.fromkeys(r["config"] for r in raw) if c == "none" or "l1=" in c]
    markers = dict(zip(sorted({r["subset"] for r in raw}), "s^o"))
    for i, name in enumerate(configs):
        for fraction, marker in markers.items():
            rows = [r for r in raw if r["config"] == name and r["subset"] == fraction]
            ax.scatter(
                [100 * r["sparsity"] for r in rows],
                [100 * r["accuracy"] for r in rows],
                marker=marker,
                color=f"C{i}",
                label=f"{name}, {fraction:.0%} train",
                alpha=0.8,
            )
    ax.set_xlabel("penalized weights exactly zero (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("proximal λ1: accuracy vs sparsity (one point per seed)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_sparsity_l1.png", dpi=110)
    plt.close(fig)


def _calibration(X_train, y_train, X_test, y_test, configs, seeds, settings):
    params = {name: p for name, _, p in configs}
    tasks = []
    for name in settings["calibration_configs"]:
        for seed in seeds:
            X_fit, X_cal, y_fit, y_cal = train_test_split(
                X_train, y_train, test_size=0.2, stratify=y_train, random_state=seed
            )
            fit_params = {
                **params[name],
                "random_state": seed,
                "max_epochs": settings["epochs"][1.0],
            }
            tasks.append(
                delayed(_fit_evaluate)(fit_params, X_fit, y_fit, X_test, y_test, X_cal, y_cal)
            )
    results = iter(Parallel(n_jobs=settings["n_jobs"])(tasks))
    rows = []
    for name in settings["calibration_configs"]:
        before, after = zip(*[next(results) for _ in seeds])
        rows.append(
            {
                "config": name,
                "seeds": len(seeds),
                "accuracy %": f"{100 * np.mean([m['accuracy'] for m in before]):.2f}",
                "ECE": f"{np.mean([m['ece'] for m in before]):.4f}",
                "ECE temperature-scaled": f"{np.mean([m['ece'] for m in after]):.4f}",
                "NLL": f"{np.mean([m['nll'] for m in before]):.4f}",
                "NLL temperature-scaled": f"{np.mean([m['nll'] for m in after]):.4f}",
            }
        )
    return rows


def _describe(params):
    """A setting in words, for the findings."""
    words = []
    if params.get("lambda1"):
        words.append(f"proximal L1 with lambda1={params['lambda1']:g}")
    if params.get("lambda2"):
        words.append(f"L2 with lambda2={params['lambda2']:g}")
    if params.get("alpha"):
        kl = params.get("kl", "label_smoothing").replace("_", " ")
        words.append(f"{kl} (KL term) with alpha={params['alpha']:g}")
    if params.get("train_transform") is not None:
        words.append("data augmentation (``RandomAffine(degrees=8, translate=(0.1, 0.1))``)")
    return " + ".join(words) or "no regularization"


def _findings(summary, tuned, calibration, svc_acc, settings):
    """The study's findings, each stated with the numbers it rests on."""

    def row(config, fraction):
        return next(r for r in summary if r["config"] == config and r["subset"] == fraction)

    def delta(r):
        return (
            f"{100 * r['delta_mean']:+.2f} ± {100 * r['delta_sd']:.2f} points "
            f"({r['wins']}/{r['seeds']} seeds better)"
        )

    subsets = settings["subsets"]
    full, small = max(subsets), min(subsets)
    lines = []
    lines.append(
        f"**What to use: {_describe(tuned['params'])}** (``{config_name(tuned['params'])}`` in "
        f"the tables). Cross-validation on the training split picks it from "
        f"{tuned['n_candidates']} candidate settings (CV accuracy "
        f"{100 * tuned['cv_score']:.2f}%). Trained on the whole training split "
        f"(max_epochs={tuned['epochs']}, module__channels={tuned['channels']}), it classifies "
        f"{100 * tuned['acc_mean']:.2f} ± {100 * tuned['acc_sd']:.2f}% of the test images "
        f"correctly over {tuned['seeds']} seeds (min {100 * tuned['acc_min']:.2f}%, max "
        f"{100 * tuned['acc_max']:.2f}%); an RBF SVC(C=10) gets {100 * svc_acc:.2f}% on the "
        "same split."
    )
    gains = "; ".join(
        f"{row('cv-selected', f)['n_train']} images ({f:.0%}): {delta(row('cv-selected', f))}"
        for f in subsets
    )
    families = dict.fromkeys(f for _, f, _ in settings["configs"] if f != "none")
    best = [
        max(
            (row(c, small) for c, f, _ in settings["configs"] if f == family),
            key=lambda r: r["delta_mean"],
        )
        for family in families
    ]
    lines.append(
        "**Gain by training-set size.** Test accuracy of that setting "
        f"against no regularization, paired by seed: {gains}. Best of each family on "
        f"{small:.0%} of the data (read off the test split, so optimistic): "
        + "; ".join(f"{r['config']} {100 * r['delta_mean']:+.2f}" for r in best)
        + " points."
    )
    l1_rows = [row(c, full) for c, f, _ in settings["configs"] if f == "lambda1"]
    lines.append(
        "**Proximal L1: sparsity and its cost.** On the whole training split: "
        + "; ".join(
            f"{r['config']}: {r['sparsity']:.0%} of the penalized weights are zero, accuracy "
            f"{100 * r['delta_mean']:+.2f} ± {100 * r['delta_sd']:.2f} points"
            for r in l1_rows
        )
        + "."
    )
    kl_ece = "; ".join(
        f"{r['config']} {r['ece']:.3f}"
        for r in (row(c, full) for c, f, _ in settings["configs"] if f.startswith("alpha"))
    )
    cal = "; ".join(
        f"{r['config']}: {r['ECE']} → {r['ECE temperature-scaled']}" for r in calibration
    )
    lines.append(
        "**Calibration.** Test ECE (lower is better) on the whole training split: "
        f"none {row('none', full)['ece']:.3f}; "
        f"{kl_ece}. After ``CalibratedClassifierCV(FrozenEstimator(model), "
        f"method='temperature')`` fitted on a held-out 20% of the training split: {cal}."
    )
    return lines


def main(argv=None):
    """Run the study and write its tables and figures.

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
    group.add_argument("--quick", action="store_true", help="2 seeds, 10 epochs, 6 configs")
    group.add_argument("--smoke", action="store_true", help="seconds-long pipeline check")
    parser.add_argument("--out", default="docs/study", help="output directory")
    parser.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        help="parallel fits, one torch thread each (default: all cores; smoke: 1)",
    )
    parser.add_argument(
        "--final-epochs",
        type=int,
        default=None,
        help="max_epochs of the CV-selected model's final fits (default: 60; quick: 10)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    spec = MODES[mode]
    n_jobs = args.n_jobs or (1 if mode == "smoke" else os.cpu_count() or 1)
    settings = {
        "epochs": spec["epochs"],
        "subsets": SUBSETS,
        "configs": [c for c in CONFIGS if spec["configs"] is None or c[0] in spec["configs"]],
        "calibration_configs": spec["calibration_configs"],
        "n_jobs": n_jobs,
    }
    seeds = list(range(spec["seeds"]))
    final_epochs = args.final_epochs or spec["final_epochs"]
    channels = spec["final_channels"]

    X_train, X_test, y_train, y_test = _load_split()
    n_by_subset = {f: len(_subset(X_train, y_train, f, 0)[1]) for f in settings["subsets"]}

    # The combined setting, chosen on the training split only, each candidate
    # trained like the final model.
    train_like_final = {"max_epochs": final_epochs, "module__channels": channels}
    chosen, cv_score = _select_combined(
        X_train, y_train, spec["cv_grid"], train_like_final, n_jobs
    )
    configs = settings["configs"] + [("cv-selected", "cv-selected", chosen)]

    keys, tasks = [], []
    for seed in seeds:
        for fraction in settings["subsets"]:
            X_sub, y_sub = _subset(X_train, y_train, fraction, seed)
            for name, _, params in configs:
                fit_params = {
                    **params,
                    "random_state": seed,
                    "max_epochs": settings["epochs"][fraction],
                }
                keys.append({"config": name, "subset": fraction, "seed": seed})
                tasks.append(delayed(_fit_evaluate)(fit_params, X_sub, y_sub, X_test, y_test))
    # Goal (a): the CV-selected setting, trained longer and wider, on the full
    # training split (same parallel batch).
    final_params = {**chosen, **train_like_final}
    tasks += [
        delayed(_fit_evaluate)(
            {**final_params, "random_state": seed}, X_train, y_train, X_test, y_test
        )
        for seed in seeds
    ]
    results = Parallel(n_jobs=n_jobs)(tasks)
    raw = [{**k, **m} for k, m in zip(keys, results)]
    tuned_acc = [m["accuracy"] for m in results[len(keys) :]]
    summary = _summarize(raw, configs, settings["subsets"], n_by_subset)
    mean, sd = _mean_sd(tuned_acc)
    tuned = {
        "params": chosen,
        "cv_score": cv_score,
        "n_candidates": len(ParameterGrid(spec["cv_grid"])),
        "acc_min": min(tuned_acc),
        "acc_max": max(tuned_acc),
        "epochs": final_epochs,
        "channels": channels,
        "acc_mean": mean,
        "acc_sd": sd,
        "seeds": len(seeds),
    }
    from sklearn.svm import SVC

    svc_acc = SVC(C=10).fit(X_train, y_train).score(X_test, y_test)

    calibration = _calibration(
        X_train, y_train, X_test, y_test, configs, seeds[: spec["calibration_seeds"]], settings
    )
    findings = _findings(summary, tuned, calibration, svc_acc, settings)
    elapsed = time.perf_counter() - start

    # Outputs.
    _write_csv(out / "raw.csv", raw)
    table = [_fmt_summary(r) for r in summary]
    _write_csv(out / "summary.csv", table)
    _write_csv(out / "calibration.csv", calibration)
    _plot_accuracy_vs_size(summary, out)
    _plot_accuracy_vs_sparsity(raw, out)
    machine = (
        f"{platform.machine()} ({os.cpu_count()} CPU cores), {n_jobs} parallel fits of one "
        "torch thread each, CPU"
    )
    epochs = ", ".join(f"{f:.0%} subset {e}" for f, e in settings["epochs"].items())
    setup = (
        f"Mode: {mode}; {len(seeds)} seeds; max_epochs: {epochs} (calibration fits: "
        f"{settings['epochs'][1.0]}; CV search and CV-selected final fits: {final_epochs}, "
        f"module__channels={channels}); test n={len(y_test)}; "
        f"run time {elapsed:.0f} s on {machine}."
    )
    with open(out / "findings.rst", "w", encoding="utf-8") as fh:
        fh.write(setup + "\n\n" + "\n\n".join(f"- {g}" for g in findings) + "\n")
    with open(out / "results.md", "w", encoding="utf-8") as fh:
        fh.write("# Regularization study on digits\n\n" + setup + "\n\n## Findings\n\n")
        fh.write("\n\n".join(f"- {g}" for g in findings) + "\n\n")
        fh.write("## Test metrics per configuration and training size\n\n")
        fh.write(_markdown_table(table) + "\n## Temperature scaling\n\n")
        fh.write(_markdown_table(calibration))
    return out


if __name__ == "__main__":
    main()
