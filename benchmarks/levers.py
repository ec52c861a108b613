"""What each speed lever buys: the estimator with one lever undone, as paired fit-level ratios.

Run from the repository root::

    python benchmarks/levers.py [--repeats 15] [--epochs 5]

Workloads (those of ``benchmarks/run.py``):

- ``SoftRegRegressor`` on 20000x20 (module 20-64-64 without dropout) and
  ``SoftRegCNNClassifier`` on the digits, without penalties;
- ``SoftRegCNNClassifier`` on the digits with lambda1=lambda2=1e-4, alpha=0.1,
  at 1 and at 2 torch threads, with the same estimator with every penalty at 0
  ("off") for the penalties' cost.

All variants of a workload run interleaved (rotated order per repeat). Each
row is the median over repeats of the variant's time over the time of the
estimator with every lever on, in the same repeat, with its distribution-free
95% confidence interval (``run.paired_summary``): above 1, the lever pays.
The project keeps a lever only where the ratio is at least 1.02 and the
interval excludes 1 on some workload; the table goes to stdout.
"""

import argparse
import sys
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import run  # noqa: E402  (benchmarks/run.py: data, timing)
from skorch import NeuralNet  # noqa: E402

import sk_softreg._base as base  # noqa: E402
import sk_softreg._numba_loops as numba_loops  # noqa: E402
from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor  # noqa: E402
from sk_softreg._base import SoftRegMixin  # noqa: E402
from sk_softreg._engine import PenaltyEngine  # noqa: E402

#: skorch's own per-batch bookkeeping (the fast layer's overrides undone)
_SKORCH_BOOKKEEPING = {name: getattr(NeuralNet, name) for name in (
    "initialize_history", "notify", "_zero_grad_optimizer", "_set_training")}

#: lever -> (class attributes of the variant, estimator parameters,
#: patches {(module, name): value}) that undo it
UNDO = {
    "all levers on": ({}, {}, {}),
    "fused Adam by default": ({}, {"optimizer__fused": False}, {}),
    "tensor batches (fast layer's iterator)": (
        {}, {"iterator_train__num_workers": 0, "iterator_valid__num_workers": 0}, {}),
    "per-batch bookkeeping (fast layer)": (_SKORCH_BOOKKEEPING, {}, {}),
    "channels_last convolution weights": ({}, {}, {(base, "_layout_agnostic"): lambda o: False}),
    "flat buffer (fast penalty engine)": ({}, {}, {(base, "FlatPenaltyEngine"): PenaltyEngine}),
    "numba loops": ({}, {}, {(numba_loops, "_kernels"): False}),
    "CE + alpha*KL by torch's label smoothing": (
        {"_data_and_kl": SoftRegMixin._data_and_kl}, {}, {}),
}
STEP_LEVERS = ("all levers on", "fused Adam by default", "tensor batches (fast layer's iterator)",
               "per-batch bookkeeping (fast layer)")
CNN_LEVERS = STEP_LEVERS + ("channels_last convolution weights",)
PENALTY_LEVERS = ("all levers on", "flat buffer (fast penalty engine)", "numba loops",
                  "CE + alpha*KL by torch's label smoothing", "fused Adam by default",
                  "channels_last convolution weights")


def variant_fit(cls, lever, X, y, epochs, **params):
    attrs, extra, patches = UNDO[lever]
    est_cls = type(cls.__name__, (cls,), attrs) if attrs else cls
    saved = {target: getattr(*target) for target in patches}
    for (module, name), value in patches.items():
        setattr(module, name, value)
    try:
        est = est_cls(**run.fixed_epochs(cls, epochs), batch_size=64, random_state=0,
                      device="cpu", **params, **extra)
        return run._check_epochs(est.fit(X, y), epochs)
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)


def _row(times, a, b, label, workload):
    med, low, high = run.paired_summary(times, a, b)
    return f"| {label} | {workload} | {med:.3f} | {low:.3f}-{high:.3f} |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    epochs, repeats = args.epochs, args.repeats
    print(f"- load average at start: {run.load_average()}; {repeats} interleaved repeats, "
          f"{epochs} epochs; numba {'installed' if numba_loops._compiled() else 'not installed'}")
    lines = ["| lever undone | workload | time / all levers on (paired median) | 95% CI |",
             "|---|---|---|---|"]
    Xr, yr = run.regression_data(20000)
    X, y = run.digits_images()
    mlp = {f"module__{k}": v for k, v in run.MLP.items()}
    for name, cls, Xw, yw, params, levers in (
        ("MLP 20-64-64", SoftRegRegressor, Xr, yr, mlp, STEP_LEVERS),
        ("CNN digits", SoftRegCNNClassifier, X, y, {}, CNN_LEVERS),
    ):
        funcs = {lever: partial(variant_fit, cls, lever, Xw, yw, epochs, **params)
                 for lever in levers}
        times = {}
        run.interleaved(funcs, repeats, record=times)
        lines += [_row(times, lever, "all levers on", lever, name) for lever in levers[1:]]
    levers = PENALTY_LEVERS if numba_loops._compiled() else tuple(
        lv for lv in PENALTY_LEVERS if lv != "numba loops")
    for n_threads in (1, 2):
        with run.threads(n_threads):
            funcs = {lever: partial(variant_fit, SoftRegCNNClassifier, lever, X, y, epochs,
                                    **run.PENALTIES) for lever in levers}
            funcs["off"] = partial(variant_fit, SoftRegCNNClassifier, "all levers on", X, y,
                                   epochs)
            times = {}
            run.interleaved(funcs, repeats, record=times)
        workload = f"CNN digits, penalties on, {n_threads} thread(s)"
        lines += [_row(times, lever, "all levers on", lever, workload) for lever in levers[1:]]
        lines.append(_row(times, "all levers on", "off", "(penalties on / off)", workload))
        if "numba loops" in levers:
            lines.append(_row(times, "numba loops", "off",
                              "(penalties on without numba / off)", workload))
    print(f"- load average at end: {run.load_average()}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
