"""Early stopping on digits: what the stop costs against a fixed 200-epoch budget.

``SoftRegCNNClassifier(max_epochs=200)`` on digits (pixels / 16), stratified
75/25 splits with seeds 0, 1, 2 (``random_state`` = the split seed). Rows:
200 epochs on all training rows; 200 epochs on the 90% that early stopping
trains on (the same ``ValidSplit``); ``early_stopping=True`` with
``scoring="loss"`` (the default), ``"accuracy"``, and ``"loss"`` with
``n_iter_no_change=30``, and the default rule with skorch's
``LRScheduler("ReduceLROnPlateau")`` on the validation loss (patience 3 or 5
epochs, factor 0.2), and the default rule watching a moving average of the
weights (``WeightAverage``: validated as the average, which the fit then keeps,
either the one at the stop or the best epoch's), and the default rule holding out
20% or 30% instead of 10% (``validation_fraction``), and early stopping on
``scoring="neg_brier_score"`` (patience 10 or 20), and the default rule keeping
the mean of the last epochs' weights at the stop (``WindowAverage``: training
unchanged, the average loaded at the end). Test accuracy per seed and its
mean, epochs run. ``--rows`` runs some rows only (their numbers, from 1,
comma-separated).

Run from the repository root::

    python benchmarks/early_stopping_digits.py [--out benchmarks/early_stopping_digits.md]
    python benchmarks/early_stopping_digits.py --rows 6,7 --out /tmp/plateau.md
    python benchmarks/early_stopping_digits.py --curves [--out benchmarks/early_stopping_curves.md]

``--curves`` asks where the accuracy goes, on seeds 0-5: per seed one fit of
``CURVE_EPOCHS`` epochs on the same 90% (the same ``ValidSplit`` as
``early_stopping``, as ``train_split``) and one on all training rows, recording
per epoch the test accuracy and the validation probabilities, for the weights
as trained and for an exponential moving average of them (evaluated on a copy,
so both come from one training run). Since early stopping restores the best
epoch's weights, the test accuracy of a stopping rule is the curve's value at
the epoch that rule restores; the table gives it for rules on the validation
loss, on its mean over 3 epochs and on the accuracy, with two patiences, and
the test accuracy at fixed epochs. Two more kinds of rule (``RULES``): keeping
the weights at the stop instead of restoring the best epoch's (on the loss),
and letting an epoch that ties the best accuracy reset the patience and be the
one restored (135 validation images give few distinct accuracies).
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
from skorch.callbacks import LRScheduler
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
    "early_stopping=True, lr x 0.2 after 3 epochs without a lower valid_loss": {
        "early_stopping": True, "plateau": 3,
    },
    "early_stopping=True, lr x 0.2 after 5 epochs without a lower valid_loss": {
        "early_stopping": True, "plateau": 5,
    },
    "early_stopping=True on the moving average (0.99, warm-up), the one at the stop kept": {
        "early_stopping": True, "average": (0.99, True, "last"),
    },
    "early_stopping=True on the moving average (0.99, warm-up), the best epoch's kept": {
        "early_stopping": True, "average": (0.99, True, "best"),
    },
    "early_stopping=True on the moving average (0.995), the best epoch's kept": {
        "early_stopping": True, "average": (0.995, False, "best"),
    },
    "early_stopping=True on the moving average (0.998), the one at the stop kept": {
        "early_stopping": True, "average": (0.998, False, "last"),
    },
    "early_stopping=True, validation_fraction=0.2": {
        "early_stopping": True, "validation_fraction": 0.2,
    },
    "early_stopping=True, validation_fraction=0.3": {
        "early_stopping": True, "validation_fraction": 0.3,
    },
    'early_stopping=True, scoring="neg_brier_score"': {
        "early_stopping": True, "scoring": "neg_brier_score",
    },
    'early_stopping=True, scoring="neg_brier_score", n_iter_no_change=20': {
        "early_stopping": True, "scoring": "neg_brier_score", "n_iter_no_change": 20,
    },
    "early_stopping=True, the mean of the last 11 epochs' weights kept (the best to the stop)": {
        "early_stopping": True, "window": ("last", 11),
    },
    "early_stopping=True, the mean of the last 6 epochs' weights kept": {
        "early_stopping": True, "window": ("last", 6),
    },
    "early_stopping=True, the mean of the weights of the best epoch +- 5 kept": {
        "early_stopping": True, "window": ("best", 5),
    },
}


def average_step(average, params, step, decay, warm_up=True):
    """One update of the moving average ``average`` of ``params`` (in place), after
    training step ``step`` (from 1); with ``warm_up`` the decay is
    ``min(decay, (1 + step) / (10 + step))``, so that early steps weigh more."""
    import torch

    if warm_up:
        decay = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for a, p in zip(average, params):
            a.lerp_(p.detach(), 1 - decay)


def load_weights(params, values):
    """Copy ``values`` into the tensors ``params`` (in place, without autograd)."""
    import torch

    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)


def _weight_average(decay, warm_up):
    """A skorch callback: the validation of each epoch sees a moving average of the
    weights, which stays in the module after the last validation."""
    from skorch.callbacks import Callback

    class WeightAverage(Callback):
        def on_train_begin(self, net, **kwargs):
            self.params = list(net.module_.parameters())
            self.average = [p.detach().clone() for p in self.params]
            self.trained, self.steps = None, 0

        def on_batch_end(self, net, training=False, **kwargs):
            if training:
                self.steps += 1
                average_step(self.average, self.params, self.steps, decay, warm_up)

        def on_batch_begin(self, net, training=False, **kwargs):
            if not training and self.trained is None:  # the average in, for validation
                self.trained = [p.detach().clone() for p in self.params]
                load_weights(self.params, self.average)

        def on_epoch_begin(self, net, **kwargs):
            if self.trained is not None:  # the trained weights back, for training
                load_weights(self.params, self.trained)
                self.trained = None

    return WeightAverage()


def fit_row(params, seed, X_train, y_train):
    params = dict(params)
    if params.pop("held_out", False):
        params["train_split"] = ValidSplit(0.1, stratified=True, random_state=seed)
    patience = params.pop("plateau", None)
    if patience:
        scheduler = LRScheduler(
            policy="ReduceLROnPlateau", monitor="valid_loss", patience=patience, factor=0.2
        )
        params["callbacks"] = [("plateau", scheduler)]
    average = params.pop("average", None)
    if average:
        decay, warm_up, keep = average
        params["callbacks"] = [("average", _weight_average(decay, warm_up))]
        params["callbacks__early_stopping__load_best"] = keep == "best"
    window = params.pop("window", None)
    if window:
        params["callbacks"] = [("window", _window_average(*window))]
        params["callbacks__early_stopping__load_best"] = False
    return SoftRegCNNClassifier(max_epochs=200, random_state=seed, **params).fit(X_train, y_train)


def _window_average(mode, width):
    """A skorch callback: at the end of training, the module takes the mean of the
    weights at the end of the last ``width`` epochs (``mode="last"``), or of the
    epochs within ``width`` of the best validation loss (``mode="best"``). The
    training itself is unchanged."""
    from collections import deque

    from skorch.callbacks import Callback

    class WindowAverage(Callback):
        def on_train_begin(self, net, **kwargs):
            self.params = list(net.module_.parameters())
            self.kept = deque(maxlen=2 * width + 1 if mode == "best" else width)

        def on_epoch_end(self, net, **kwargs):
            epoch = net.history[-1, "epoch"]
            self.kept.append((epoch, [p.detach().clone() for p in self.params]))

        def on_train_end(self, net, **kwargs):
            if mode == "best":
                best = max(e for e, ok in net.history[:, ("epoch", "valid_loss_best")] if ok)
                chosen = [w for e, w in self.kept if abs(e - best) <= width]
            else:
                chosen = [w for _, w in self.kept]
            import torch

            mean = [torch.stack(ws).mean(0) for ws in zip(*chosen)]
            load_weights(self.params, mean)

    return WindowAverage()


CURVE_EPOCHS = 100
CURVE_SEEDS = (0, 1, 2, 3, 4, 5)
EMA_DECAY = 0.99


def _curve_fit(seed, X, y, held_out):
    """One ``CURVE_EPOCHS``-epoch fit: per epoch, the test accuracy and (with
    ``held_out``) the validation probabilities, of the weights and of their
    moving average (evaluated on a copy, so the training is the same)."""
    import torch
    from skorch.callbacks import Callback
    from skorch.dataset import Dataset

    torch.set_num_threads(1)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)
    split = ValidSplit(0.1, stratified=True, random_state=seed)
    X_val = y_val = None
    if held_out:
        valid = split(Dataset(X_tr, y_tr), y_tr)[1].indices
        X_val, y_val = X_tr[valid], np.searchsorted(np.unique(y_tr), y_tr[valid])

    class Record(Callback):
        def on_train_begin(self, net, **kwargs):
            self.average = [p.detach().clone() for p in net.module_.parameters()]
            self.steps, self.out = 0, {"plain": ([], []), "ema": ([], [])}

        def on_batch_end(self, net, training=False, **kwargs):
            if training:  # the moving average, with the usual warm-up of its decay
                self.steps += 1
                average_step(self.average, net.module_.parameters(), self.steps, EMA_DECAY)

        def _evaluate(self, net, key):
            test, proba = self.out[key]
            test.append(float(np.mean(net.predict(X_te) == y_te)))
            if X_val is not None:
                proba.append(net.predict_proba(X_val))

        def on_epoch_end(self, net, **kwargs):
            self._evaluate(net, "plain")
            params = list(net.module_.parameters())
            saved = [p.detach().clone() for p in params]
            load_weights(params, self.average)
            self._evaluate(net, "ema")
            load_weights(params, saved)

    record = Record()
    SoftRegCNNClassifier(
        max_epochs=CURVE_EPOCHS, random_state=seed, callbacks=[("record", record)],
        train_split=split if held_out else None,
    ).fit(X_tr, y_tr)
    print("curve", seed, "held out" if held_out else "all rows", file=sys.stderr, flush=True)
    return {key: {"test": test, "proba": proba, "y_val": y_val} for key, (test, proba) in record.out.items()}


def curves(X, y):
    """Per seed: the curves of a fit on the 90% (``held_out``) and of one on all rows."""
    from joblib import Parallel, delayed

    jobs = [(seed, held_out) for seed in CURVE_SEEDS for held_out in (True, False)]
    fits = Parallel(n_jobs=2)(delayed(_curve_fit)(seed, X, y, held_out) for seed, held_out in jobs)
    return {(seed, held_out): fit for (seed, held_out), fit in zip(jobs, fits)}


def restored_epoch(values, patience, greater, tol, ties=False):
    """0-based epoch that EarlyStopping's rule restores, and the epochs it runs.

    With ``ties``, an epoch that equals the best value (within ``tol``) also
    counts as an improvement: it resets the patience and becomes the restored
    epoch (the latest of the tied epochs, not the first).
    """
    best, best_i, wait = None, 0, 0
    for i, v in enumerate(values):
        if ties and best is not None and abs(v - best) <= tol:
            best_i, wait = i, 0
        elif best is None or (v > best + tol if greater else v < best - tol):
            best, best_i, wait = v, i, 0
        else:
            wait += 1
            if wait >= patience:
                return best_i, i + 1
    return best_i, len(values)


def _monitors(curve):
    """Per epoch: the validation loss, the loss averaged over 3 epochs, and the accuracy."""
    y_val = curve["y_val"]
    loss = [float(-np.mean(np.log(np.clip(p[np.arange(len(y_val)), y_val], 1e-12, None))))
            for p in curve["proba"]]
    smooth = [float(np.mean(loss[max(0, i - 2): i + 1])) for i in range(len(loss))]
    accuracy = [float(np.mean(p.argmax(1) == y_val)) for p in curve["proba"]]
    return {"valid_loss": (loss, False), "valid_loss, mean of 3 epochs": (smooth, False),
            "valid_acc": (accuracy, True)}


#: the stopping rules of the curves' table: a monitor, and which epoch's weights
#: the fit keeps: ``best`` (restored, as ``early_stopping`` does), ``last`` (the
#: weights at the stop) or ``ties`` (an epoch equal to the best resets the
#: patience, and the latest such epoch is restored)
RULES = (
    ("valid_loss", "best"), ("valid_loss, mean of 3 epochs", "best"), ("valid_acc", "best"),
    ("valid_loss", "last"), ("valid_acc", "ties"),
)


def curve_lines(runs):
    head = ("| weights | rule | mean, seeds 0-2 | mean, all seeds | per seed: test accuracy @ "
            "restored epoch / epochs run |")
    lines = [head, "|---|---|---|---|---|"]
    for key, label in (("plain", "as trained"), ("ema", f"moving average ({EMA_DECAY})")):
        rows = []
        for rows_label, held_out in (("the 90%", True), ("all rows", False)):
            for epoch in (25, 50, CURVE_EPOCHS):
                accs = [runs[seed, held_out][key]["test"][epoch - 1] for seed in CURVE_SEEDS]
                rows.append((f"fixed {epoch} epochs, {rows_label}", accs,
                             ", ".join(f"{a:.4f}" for a in accs)))
        for name, variant in RULES:
            for patience in (10, 20):
                accs, cells = [], []
                for seed in CURVE_SEEDS:
                    curve = runs[seed, True][key]
                    values, greater = _monitors(curve)[name]
                    i, n = restored_epoch(values, patience, greater, 1e-4, ties=variant == "ties")
                    if variant == "last":
                        i = n - 1
                    accs.append(curve["test"][i])
                    cells.append(f"{curve['test'][i]:.4f} @ {i + 1} / {n}")
                suffix = {"best": "", "last": ", last epoch kept", "ties": ", ties extend"}[variant]
                rows.append((f"{name}, n_iter_no_change={patience}{suffix}", accs, ", ".join(cells)))
        for rule, accs, cells in rows:
            lines.append(f"| {label} | {rule} | {np.mean(accs[:3]):.4f} | {np.mean(accs):.4f} | {cells} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--curves", action="store_true")
    parser.add_argument("--rows", default=None, help="row numbers (from 1), comma-separated")
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
            f"- digits / 16, stratified 75/25 splits, seeds {CURVE_SEEDS}; per seed one "
            f"`SoftRegCNNClassifier(max_epochs={CURVE_EPOCHS})` fit on the 90% that early "
            "stopping trains on (the same `ValidSplit`) and one on all training rows, one "
            "thread each, two at a time. Each epoch's test accuracy (and validation "
            "probabilities) is recorded for the weights as trained and for their moving "
            f"average (decay {EMA_DECAY} per step, evaluated on a copy: the training is the "
            "same). A rule's test accuracy is that of the epoch it restores.",
            "",
        ]
        text = "\n".join(header + lines) + "\n"
        Path(args.out).write_text(text)
        print(text)
        return
    rows = list(ROWS.items())
    if args.rows:
        rows = [rows[int(i) - 1] for i in args.rows.split(",")]
    lines = []
    for name, params in rows:
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
        f"- command: `python benchmarks/early_stopping_digits.py{' --rows ' + args.rows if args.rows else ''}`; "
        f"total {time.perf_counter() - start:.0f} s",
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
