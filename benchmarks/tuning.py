"""Cheaper tuning on digits: a fixed-epoch grid against early stopping and successive halving.

Run from the repository root::

    python benchmarks/tuning.py            # the full comparison, written to benchmarks/tuning.md
    python benchmarks/tuning.py --quick    # a smoke run on 600 digits with 8 epochs (not written)

The three searches tune the same 8 candidates (``sk_softreg._demo.DEFAULT_GRID``:
``lambda1``, ``lambda2``, ``alpha`` each in two values) with the same 3-fold
stratified cross-validation on a stratified 75% training part of digits, refit
the best candidate on that whole part and score it on the held-out 25%:

1. ``GridSearchCV`` with ``max_epochs=E`` for every fit (E = 56; the default
   is 30, so stopping early has room to matter);
2. ``GridSearchCV`` with ``early_stopping=True`` and scikit-learn MLP's
   defaults (``validation_fraction=0.1``, ``n_iter_no_change=10``,
   ``tol=1e-4``), ``max_epochs=E`` as the cap;
3. ``HalvingGridSearchCV(resource="max_epochs", max_resources=E, factor=2,
   min_resources="exhaust")``: 8 candidates at 7 epochs, the best 4 at 14,
   2 at 28 and 1 at 56 (with 8 candidates, halving by 2 is what reaches E;
   factor 3 would stop after two rounds);
4. the same halving search over estimators with ``early_stopping=True``, the
   combination the user guide recommends.

All estimators use ``random_state=0`` and the CPU; the searches run one after
the other in this process with ``n_jobs=1``. Wall times include the refit.
Targets (issue 12): early stopping or halving at most 0.5x the fixed grid's
wall time, with a test accuracy at most 0.3 points lower.
"""

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
import skorch
import torch
from sklearn.datasets import load_digits
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.model_selection import (
    GridSearchCV,
    HalvingGridSearchCV,
    StratifiedKFold,
    train_test_split,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sk_softreg import SoftRegCNNClassifier  # noqa: E402
from sk_softreg._demo import DEFAULT_GRID  # noqa: E402


def searches(max_epochs):
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    base = dict(random_state=0, device="cpu")
    halving = dict(cv=cv, resource="max_epochs", max_resources=max_epochs, factor=2,
                   min_resources="exhaust", random_state=0)
    return {
        "GridSearchCV, fixed epochs": GridSearchCV(
            SoftRegCNNClassifier(max_epochs=max_epochs, **base), DEFAULT_GRID, cv=cv
        ),
        "GridSearchCV, early_stopping=True": GridSearchCV(
            SoftRegCNNClassifier(max_epochs=max_epochs, early_stopping=True, **base), DEFAULT_GRID, cv=cv
        ),
        'HalvingGridSearchCV(resource="max_epochs")': HalvingGridSearchCV(
            SoftRegCNNClassifier(**base), DEFAULT_GRID, **halving
        ),
        'HalvingGridSearchCV(resource="max_epochs"), early_stopping=True': HalvingGridSearchCV(
            SoftRegCNNClassifier(early_stopping=True, **base), DEFAULT_GRID, **halving
        ),
    }


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def describe(name, search):
    best = search.best_estimator_
    params = {k: v for k, v in search.best_params_.items() if k in DEFAULT_GRID}
    notes = [str(params)]
    if "Halving" in name:
        plan = ", ".join(f"{c} at {r}" for c, r in zip(search.n_candidates_, search.n_resources_))
        notes.append(f"candidates at epochs: {plan}")
    if "early_stopping" in name:
        notes.append(f"refit ran {best.n_iter_} epochs, kept epoch {best.best_epoch_}")
    return "; ".join(notes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="600 digits, 9 epochs; prints only")
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    max_epochs = 56
    if args.quick:
        X, y, max_epochs = X[:600], y[:600], 8
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)

    rows = []
    for name, search in searches(max_epochs).items():
        start = time.perf_counter()
        search.fit(X_tr, y_tr)
        wall = time.perf_counter() - start
        accuracy = search.score(X_te, y_te)
        rows.append((name, wall, accuracy, describe(name, search)))
        print(f"{name}: {wall:.1f} s, test accuracy {accuracy:.4f}", flush=True)

    fixed_wall, fixed_acc = rows[0][1], rows[0][2]
    lines = [
        "| search | wall time (s) | vs fixed | test accuracy | vs fixed (points) | best candidate |",
        "|---|---|---|---|---|---|",
    ]
    for name, wall, accuracy, note in rows:
        lines.append(
            f"| {name} | {wall:.1f} | {wall / fixed_wall:.2f}x | {accuracy:.4f} "
            f"| {100 * (accuracy - fixed_acc):+.2f} | {note} |"
        )
    verdicts = []
    for name, wall, accuracy, _ in rows[1:]:
        met = wall <= 0.5 * fixed_wall and 100 * (fixed_acc - accuracy) <= 0.3
        verdicts.append(f"- {name}: target {'met' if met else 'missed'} "
                        f"({wall / fixed_wall:.2f}x the time, {100 * (accuracy - fixed_acc):+.2f} points).")
    table = "\n".join(lines)
    print("\n" + table + "\n\n" + "\n".join(verdicts))
    if args.quick:
        return
    machine = (
        f"{platform.machine()}, {cpu_name()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"skorch {skorch.__version__}, scikit-learn {sklearn.__version__}, "
        f"CUDA {'available' if torch.cuda.is_available() else 'not available'} (device='cpu')"
    )
    text = "\n".join([
        "# Tuning: fixed epochs, early stopping, successive halving",
        "",
        f"Measured {datetime.date.today().isoformat()} with `python benchmarks/tuning.py` on {machine}.",
        f"{len(X_tr)} training and {len(X_te)} test digits; 8 candidates x 3 folds; "
        f"E = {max_epochs} epochs (see the script's docstring for the set-up).",
        "",
        table,
        "",
        "Targets: at most 0.5x the fixed grid's wall time, at most 0.3 points lower test accuracy.",
        "",
        *verdicts,
        "",
    ])
    (ROOT / "benchmarks" / "tuning.md").write_text(text)


if __name__ == "__main__":
    main()
