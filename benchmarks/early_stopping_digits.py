"""Early stopping on digits: what the stop costs against a fixed 200-epoch budget.

``SoftRegCNNClassifier(max_epochs=200)`` on digits (pixels / 16), stratified
75/25 splits with seeds 0, 1, 2 (``random_state`` = the split seed). Rows:
200 epochs on all training rows; 200 epochs on the 90% that early stopping
trains on (the same ``ValidSplit``); ``early_stopping=True`` with
``scoring="loss"`` (the default), ``"accuracy"``, and ``"loss"`` with
``n_iter_no_change=30``. Test accuracy per seed and its mean, epochs run.

Run from the repository root::

    python benchmarks/early_stopping_digits.py [--out benchmarks/early_stopping_digits.md]
    python benchmarks/early_stopping_digits.py --curves [--out benchmarks/early_stopping_curves.md]

``--curves`` asks where the accuracy goes: one fit per seed of ``CURVE_EPOCHS``
epochs on the same 90% (the same ``ValidSplit`` as ``early_stopping``, as
``train_split``), recording per epoch the validation loss and accuracy and the
test accuracy. Since early stopping restores the best epoch's weights, the
test accuracy of a stopping rule is the curve's value at the epoch that rule
restores; the table gives it for rules on the loss (with ``tol``) and on the
accuracy, with several patiences, and the test accuracy at fixed epochs.
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


CURVE_EPOCHS = 120


def curves(X, y):
    """Per seed: the validation loss and accuracy and the test accuracy of each epoch."""
    from skorch.callbacks import Callback

    class TestAccuracy(Callback):
        def __init__(self, X, y, out):
            self.X, self.y, self.out = X, y, out

        def on_epoch_end(self, net, **kwargs):
            self.out.append(float(np.mean(net.predict(self.X) == self.y)))

    out = []
    for seed in SEEDS:
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)
        test = []
        model = SoftRegCNNClassifier(
            max_epochs=CURVE_EPOCHS, random_state=seed,
            callbacks=[("test", TestAccuracy(X_te, y_te, test))],
            train_split=ValidSplit(0.1, stratified=True, random_state=seed),
        ).fit(X_tr, y_tr)
        out.append({"valid_loss": list(model.history[:, "valid_loss"]),
                    "valid_acc": list(model.history[:, "valid_acc"]), "test": test})
        print("curve", seed, test[-1], file=sys.stderr, flush=True)
    return out


def restored_epoch(values, patience, greater, tol):
    """0-based epoch that EarlyStopping's rule restores, and the epochs it runs."""
    best, best_i, wait = None, 0, 0
    for i, v in enumerate(values):
        if best is None or (v > best + tol if greater else v < best - tol):
            best, best_i, wait = v, i, 0
        else:
            wait += 1
            if wait >= patience:
                return best_i, i + 1
    return best_i, len(values)


def curve_lines(runs):
    lines = ["| rule | mean test accuracy | per seed | restored epoch / epochs run |", "|---|---|---|---|"]
    for epoch in (25, 50, 100, CURVE_EPOCHS):
        accs = [r["test"][epoch - 1] for r in runs]
        lines.append(f"| fixed {epoch} epochs | {np.mean(accs):.4f} | "
                     f"{', '.join(f'{a:.4f}' for a in accs)} | {epoch} |")
    for key, greater, tol in (("valid_loss", False, 1e-4), ("valid_acc", True, 1e-4)):
        for patience in (10, 20, 30):
            picks = [restored_epoch(r[key], patience, greater, tol) for r in runs]
            accs = [r["test"][i] for r, (i, _) in zip(runs, picks)]
            stops = ", ".join(f"{i + 1} / {n}" for i, n in picks)
            lines.append(f"| {key}, n_iter_no_change={patience} | {np.mean(accs):.4f} | "
                         f"{', '.join(f'{a:.4f}' for a in accs)} | {stops} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--curves", action="store_true")
    args = parser.parse_args(argv)
    name = "early_stopping_curves.md" if args.curves else "early_stopping_digits.md"
    args.out = args.out or str(ROOT / "benchmarks" / name)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    start = time.perf_counter()
    if args.curves:
        lines = curve_lines(curves(X, y))
        header = [
            "# Early stopping on digits: where the accuracy goes",
            "",
            f"- date (UTC): {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
            f"- machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores; "
            f"load average at start: {load}",
            f"- command: `python benchmarks/early_stopping_digits.py --curves`; total "
            f"{time.perf_counter() - start:.0f} s",
            f"- digits / 16, stratified 75/25 splits, seeds 0, 1, 2; `SoftRegCNNClassifier("
            f"max_epochs={CURVE_EPOCHS})` on the 90% that early stopping trains on; the test "
            "accuracy of a rule is that of the epoch it restores",
            "",
        ]
        text = "\n".join(header + lines) + "\n"
        Path(args.out).write_text(text)
        print(text)
        return
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
