"""Early stopping on digits: what the stop costs against a fixed 200-epoch budget.

``SoftRegCNNClassifier(max_epochs=200)`` on digits (pixels / 16), stratified
75/25 splits with seeds 0, 1, 2 (``random_state`` = the split seed). Rows:
200 epochs on all training rows; 200 epochs on the 90% that early stopping
trains on (the same ``ValidSplit``); ``early_stopping=True`` with
``scoring="loss"`` (the default), ``"accuracy"``, and ``"loss"`` with
``n_iter_no_change=30``. Test accuracy per seed and its mean, epochs run.

Run from the repository root::

    python benchmarks/early_stopping_digits.py [--out benchmarks/early_stopping_digits.md]
"""

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from skorch.dataset import ValidSplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sk_softreg import SoftRegCNNClassifier  # noqa: E402

SEEDS = (0, 1, 2)
ROWS = {
    "200 epochs, all training rows": {},
    "200 epochs, the 90% early stopping trains on": {"held_out": True},
    'early_stopping=True, scoring="loss" (default)': {"early_stopping": True},
    'early_stopping=True, scoring="accuracy"': {"early_stopping": True, "scoring": "accuracy"},
    'early_stopping=True, scoring="loss", n_iter_no_change=30': {
        "early_stopping": True, "n_iter_no_change": 30,
    },
}


def fit_row(params, seed, X_train, y_train):
    params = dict(params)
    if params.pop("held_out", False):
        params["train_split"] = ValidSplit(0.1, stratified=True, random_state=seed)
    return SoftRegCNNClassifier(max_epochs=200, random_state=seed, **params).fit(X_train, y_train)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "early_stopping_digits.md"))
    args = parser.parse_args(argv)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    start = time.perf_counter()
    lines = []
    for name, params in ROWS.items():
        accuracies, epochs = [], []
        for seed in SEEDS:
            X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)
            model = fit_row(params, seed, X_tr, y_tr)
            accuracies.append(model.score(X_te, y_te))
            epochs.append(model.n_iter_)
            print(name, seed, accuracies[-1], model.n_iter_, file=sys.stderr, flush=True)
        per_seed = ", ".join(f"{a:.4f}" for a in accuracies)
        lines.append(f"| {name} | {np.mean(accuracies):.4f} | {per_seed} | {', '.join(map(str, epochs))} |")
    header = [
        "# Early stopping on digits",
        "",
        f"- date (UTC): {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
        f"- machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores; "
        f"load average at start: {load}",
        f"- command: `python benchmarks/early_stopping_digits.py`; total {time.perf_counter() - start:.0f} s",
        "- digits / 16, stratified 75/25 splits, seeds 0, 1, 2; `SoftRegCNNClassifier(max_epochs=200)`",
        "",
        "| fit | mean test accuracy | per seed | epochs run |",
        "|---|---|---|---|",
    ]
    text = "\n".join(header + lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
