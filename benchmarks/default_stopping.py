"""Should the default fit stop when the training loss converges (as MLPRegressor does)?

Run from the repository root::

    python benchmarks/default_stopping.py                      # the defaults
    python benchmarks/default_stopping.py --max-epochs 200 --problems diabetes
    python benchmarks/default_stopping.py --max-epochs 100 --problems digits --early-stopping

It fits the default classifier on digits (the split of the quality-bar test
in ``tests/test_estimators.py``) and the default regressor on diabetes (a
75/25 split with seed 0) for ``random_state`` 0, 1 and 2 and reports, for
each fit, the test score, the epochs run and the fit time with the fixed
``max_epochs`` of the defaults, and what training-loss convergence would have
given: stop once ``train_loss`` has not improved by ``tol=1e-4`` (absolute)
for ``n_iter_no_change=10`` epochs, keeping the last weights (scikit-learn
MLP's rule without early stopping, implemented as skorch's ``EarlyStopping``
on ``train_loss``).

A seeded fit is deterministic and stopping consumes no random numbers, so the
convergence fit is the first epochs of the fixed fit: the script fits once,
keeps a copy of the weights after every epoch, finds the epoch where the rule
would stop, and scores those weights. Its fit time is the sum of the
history's per-epoch durations up to that epoch. "longest run" is the most
consecutive epochs without a ``tol`` improvement (the rule stops at 10).
``--early-stopping`` adds a third fit per seed, with ``early_stopping=True``
(a validation split, best weights restored) and the same ``max_epochs``.
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_diabetes, load_digits
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor  # noqa: E402

TOL, N_ITER_NO_CHANGE = 1e-4, 10


class Snapshots(Callback):
    """Keeps a copy of the module's weights after every epoch (draws no random numbers)."""

    def initialize(self):
        self.states = []
        return self

    def on_epoch_end(self, net, **kwargs):
        self.states.append(copy.deepcopy(net.module_.state_dict()))


def stop_epoch(train_loss, tol=TOL, patience=N_ITER_NO_CHANGE):
    """Where skorch's EarlyStopping(threshold_mode="abs") stops (1-based, or None), and
    the longest run of epochs without improvement."""
    threshold, misses, longest = np.inf, 0, 0
    for epoch, loss in enumerate(train_loss, start=1):
        if loss < threshold:
            threshold, misses = loss - tol, 0
        else:
            misses += 1
        longest = max(longest, misses)
        if misses == patience:
            return epoch, longest
    return None, longest


def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)


def diabetes():
    X, y = load_diabetes(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(X_tr)
    return scaler.transform(X_tr), scaler.transform(X_te), y_tr, y_te


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the estimators' own")
    parser.add_argument("--problems", nargs="+", choices=["digits", "diabetes"], default=["digits", "diabetes"])
    parser.add_argument("--early-stopping", action="store_true", help="also fit with early_stopping=True")
    args = parser.parse_args()
    problems = {
        "digits accuracy": (SoftRegCNNClassifier, digits),
        "diabetes R²": (SoftRegRegressor, diabetes),
    }
    problems = {k: v for k, v in problems.items() if k.split()[0] in args.problems}
    X_tr, X_te, y_tr, y_te = diabetes()
    print(f"Ridge R² on diabetes: {Ridge().fit(X_tr, y_tr).score(X_te, y_te):.4f}\n")
    es_head = " early_stopping: score | epochs | fit time (s) |" if args.early_stopping else ""
    print("| problem | random_state | fixed: score | epochs | fit time (s) "
          "| convergence: score | epochs | fit time (s) | longest run |" + es_head)
    print("|---" * (9 + 3 * args.early_stopping) + "|")
    extra = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
    for name, (cls, data) in problems.items():
        X_tr, X_te, y_tr, y_te = data()
        for seed in range(3):
            snapshots = Snapshots()
            est = cls(random_state=seed, device="cpu", callbacks=[("snapshots", snapshots)], **extra)
            start = time.perf_counter()
            est.fit(X_tr, y_tr)
            elapsed = time.perf_counter() - start
            score = est.score(X_te, y_te)
            losses, durations = est.history[:, "train_loss"], est.history[:, "dur"]
            stop, longest = stop_epoch(losses)
            if stop is None:
                converged = (score, len(losses), elapsed)
            else:
                est.module_.load_state_dict(dict(est.callbacks_)["snapshots"].states[stop - 1])
                converged = (est.score(X_te, y_te), stop, float(np.sum(durations[:stop])))
            row = (f"| {name} | {seed} | {score:.4f} | {len(losses)} | {elapsed:.2f} "
                   f"| {converged[0]:.4f} | {converged[1]} | {converged[2]:.2f} | {longest} |")
            if args.early_stopping:
                stopped = cls(random_state=seed, device="cpu", early_stopping=True, **extra)
                start = time.perf_counter()
                stopped.fit(X_tr, y_tr)
                elapsed = time.perf_counter() - start
                row += f" {stopped.score(X_te, y_te):.4f} | {stopped.n_iter_} | {elapsed:.2f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
