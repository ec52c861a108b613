"""Speed benchmarks of sk_softreg against PyTorch, skorch and scikit-learn.

Run from the repository root::

    python benchmarks/run.py            # full run, 5 repeats
    python benchmarks/run.py --quick    # smoke run: fewer epochs and repeats
    python benchmarks/run.py --only 3 --repeats 23   # row 3 alone, 154 pairs per thread count

Every comparison runs all its sides in this one process, interleaved (each
repeat runs every side once, in a rotated order), and reports the median wall
time of each side. The ratio is the ratio of those medians, except in the
rows that compare two fits repeat by repeat (1a, 2, 3 and 3f): there it is
the median of the per-repeat ratios, with its distribution-free 95% confidence
interval, and the note gives the ratio of medians. A slow phase of the shared
machine hits both fits of a repeat alike and cancels out of their ratio, not
out of two medians taken over different fits (``benchmarks/results_paired.md``
and the CHANGELOG give figures). Single fits on a shared machine vary by
+-10-20%, so the close comparisons get more pairs: 1a runs 3x the repeats,
and row 3 runs 3-epoch fits, 20/3 as many of them as row 2 runs 10-epoch fits
(``benchmarks/ab.py`` compares two revisions that way). Every fit runs exactly the stated number of epochs
(checked after each fit). The "fastest hand-written loop" is the faster (by
median) of the same loop with ``torch.optim.Adam`` and with
``Adam(fused=True)``. Peak memory (e) is measured in fresh child processes.
The Markdown table goes to stdout and to ``benchmarks/results.md``.
"""

import argparse
import datetime
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPRegressor
from skorch import NeuralNetRegressor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor, _numba_loops  # noqa: E402
from sk_softreg.modules import GaussianMLP, HalfMSELoss, SoftRegCNN  # noqa: E402

PENALTIES = {"lambda1": 1e-4, "lambda2": 1e-4, "alpha": 0.1}
#: the MLP of the issue: 20 -> 64 -> 64 -> (mean, log-variance), no dropout
MLP = {"hidden_units": (64, 64), "dropout": 0.0}


# ----------------------------------------------------------------------
# data
def digits_images(n_copies=1):
    X, y = load_digits(return_X_y=True)
    X = np.tile((X / 16.0).astype(np.float32), (n_copies, 1))
    return X.reshape(-1, 1, 8, 8), np.tile(y, n_copies).astype(np.int64)


def images_28(n_images):
    """``n_images`` single-channel 28x28 images: the digits upsampled (bilinear), tiled."""
    X, y = digits_images()
    big = torch.nn.functional.interpolate(
        torch.as_tensor(X), size=(28, 28), mode="bilinear", align_corners=False
    )
    reps = -(-n_images // len(X))
    return np.tile(big.numpy(), (reps, 1, 1, 1))[:n_images], np.tile(y, reps)[:n_images]


def regression_data(n_samples):
    X, y = make_regression(n_samples=n_samples, n_features=20, noise=10.0, random_state=0)
    y = (y - y.mean()) / y.std()
    return X.astype(np.float32), y.astype(np.float32)


# ----------------------------------------------------------------------
# the fits
def fixed_epochs(cls, epochs):
    """Parameters that make ``cls`` run exactly ``epochs`` epochs (no convergence stop)."""
    params = {"max_epochs": epochs}
    names = cls().get_params()
    if "early_stopping" in names:
        params["early_stopping"] = False
    if "n_iter_no_change" in names:
        params["n_iter_no_change"] = epochs + 1
    return params


def _check_epochs(net, epochs):
    if len(net.history) != epochs:
        raise RuntimeError(f"{type(net).__name__} ran {len(net.history)} epochs, not {epochs}")
    return net


def hand_fit(module, X, y, loss_fn, lr, epochs, batch_size=64, fused=False, device="cpu",
             channels_last=False, autocast_bf16=False, seed=0):
    """The hand-written loop: Adam, shuffled mini-batches sliced from tensors, no extras."""
    torch.manual_seed(seed)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = module.to(device=device, memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=fused or None)
    Xt, yt = torch.as_tensor(X, device=device), torch.as_tensor(y, device=device)
    if channels_last:
        Xt = Xt.contiguous(memory_format=torch.channels_last)
    # the autocast context only where it is used: entered per batch it costs time
    autocast = partial(torch.autocast, "cpu", dtype=torch.bfloat16) if autocast_bf16 else nullcontext
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(Xt), device=device)
        for start in range(0, len(Xt), batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            with autocast():
                loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
    if device != "cpu":
        torch.cuda.synchronize()
    return model


def hand_cnn_fit(X, y, epochs, batch_size=64, **kwargs):
    torch.manual_seed(0)
    module = SoftRegCNN(input_shape=X.shape[1:], n_classes=int(y.max()) + 1)
    return hand_fit(module, X, y, torch.nn.functional.cross_entropy, 2e-3, epochs, batch_size,
                    **kwargs)


def hand_penalized_cnn_fit(X, y, epochs, lambda1=0.0, lambda2=0.0, alpha=0.0, batch_size=64,
                           lr=2e-3):
    """Row 3's floor: the digits CNN in a hand-written loop, penalties as cheap as eager torch.

    λ2 is the fused Adam's ``weight_decay = 2·λ2`` on the weights' group (its
    exact gradient, inside the fused kernel); the KL from uniform reuses the
    cross-entropy's log-softmax; the Adam-metric proximal L1 step takes four
    foreach kernels and one clamp per tensor; no penalty values are computed
    (a hand loop keeps no history). Weights ``channels_last``, as the
    estimator's default CNN on the CPU. With every penalty 0 it is the plain loop.
    """
    torch.manual_seed(0)
    model = SoftRegCNN(input_shape=X.shape[1:], n_classes=int(y.max()) + 1)
    model = model.to(memory_format=torch.channels_last)
    weights = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.Adam(
        [{"params": weights, "weight_decay": 2.0 * lambda2}, {"params": others}], lr=lr,
        fused=True,
    )
    beta2, eps = optimizer.defaults["betas"][1], optimizer.defaults["eps"]
    log_k = math.log(int(y.max()) + 1)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(Xt))
        for start in range(0, len(Xt), batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            log_p = torch.log_softmax(model(Xt[idx]), dim=-1)
            loss = torch.nn.functional.nll_loss(log_p, yt[idx])
            if alpha:
                loss = loss - alpha * log_p.mean() - alpha * log_k
            loss.backward()
            optimizer.step()
            if lambda1:
                with torch.no_grad():
                    step = float(optimizer.state[weights[0]]["step"])
                    root = math.sqrt(1.0 - beta2 ** step)
                    t = torch._foreach_sqrt([optimizer.state[p]["exp_avg_sq"] for p in weights])
                    torch._foreach_add_(t, eps * root)
                    torch._foreach_reciprocal_(t)
                    torch._foreach_mul_(t, lr * lambda1 * root)
                    for p, tp in zip(weights, t):
                        p.sub_(torch.clamp(p, min=-tp, max=tp))
    return model


def _half_mse_on_mean(out, target):
    return 0.5 * torch.nn.functional.mse_loss(out[:, :1], target)


def hand_mlp_fit(X, y, epochs, **kwargs):
    torch.manual_seed(0)
    module = GaussianMLP(n_features=X.shape[1], n_outputs=1, **MLP)
    return hand_fit(module, X, y.reshape(-1, 1), _half_mse_on_mean, 1e-3, epochs, **kwargs)


def softreg_cnn_fit(X, y, epochs, batch_size=64, device="cpu", **params):
    clf = SoftRegCNNClassifier(
        **fixed_epochs(SoftRegCNNClassifier, epochs), batch_size=batch_size, random_state=0,
        device=device, **params,
    )
    clf.fit(X, y)
    if device != "cpu":
        torch.cuda.synchronize()
    return _check_epochs(clf, epochs)


def softreg_mlp_fit(X, y, epochs, cls=SoftRegRegressor):
    reg = cls(
        **fixed_epochs(cls, epochs), batch_size=64, random_state=0, device="cpu",
        **{f"module__{k}": v for k, v in MLP.items()},
    )
    return _check_epochs(reg.fit(X, y), epochs)


def skorch_mlp_fit(X, y, epochs):
    """Plain skorch, same module and loss: its defaults (DataLoader, unfused Adam)."""
    torch.manual_seed(0)
    net = NeuralNetRegressor(
        GaussianMLP, module__n_features=X.shape[1], module__n_outputs=1,
        **{f"module__{k}": v for k, v in MLP.items()},
        criterion=MeanHalfMSE, optimizer=torch.optim.Adam, lr=1e-3, max_epochs=epochs,
        batch_size=64, train_split=None, iterator_train__shuffle=True, device="cpu", verbose=0,
    )
    return _check_epochs(net.fit(X, y.reshape(-1, 1)), epochs)


class MeanHalfMSE(HalfMSELoss):
    """HalfMSELoss on the mean column of GaussianMLP's (mean, log-variance) output."""

    def forward(self, input, target):
        return super().forward(input[:, :1], target)


def sklearn_mlp_fit(X, y, epochs):
    mlp = MLPRegressor(
        hidden_layer_sizes=MLP["hidden_units"], batch_size=64, max_iter=epochs,
        learning_rate_init=1e-3, n_iter_no_change=epochs + 1, tol=0.0, random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(X, y)
    if mlp.n_iter_ != epochs:
        raise RuntimeError(f"MLPRegressor ran {mlp.n_iter_} epochs, not {epochs}")
    return mlp


def grid_search_fit(X, y, n_jobs, epochs):
    grid = {"lambda2": [0.0, 1e-4], "alpha": [0.0, 0.1]}
    est = SoftRegRegressor(
        **fixed_epochs(SoftRegRegressor, epochs), batch_size=64, random_state=0, device="cpu"
    )
    return GridSearchCV(est, grid, cv=3, n_jobs=n_jobs).fit(X, y)


# ----------------------------------------------------------------------
# timing helpers
def interleaved(funcs, repeats, record=None):
    """Median seconds of each callable; each repeat runs them all, in a rotated order.

    ``record``, a dict, receives each callable's list of times, repeat by repeat.
    """
    names = list(funcs)
    times = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            funcs[name]()
            times[name].append(time.perf_counter() - start)
    if record is not None:
        record.update(times)
    return {name: statistics.median(ts) for name, ts in times.items()}


def per_repeat_ratios(times, a, b):
    """``a``'s time / ``b``'s time, repeat by repeat: a slow phase of the machine
    that spans one repeat cancels out."""
    return [x / y for x, y in zip(times[a], times[b])]


def paired_ratio(times, a, b):
    """Median over repeats of :func:`per_repeat_ratios`."""
    return statistics.median(per_repeat_ratios(times, a, b))


def median_interval(values, level=0.95):
    """Distribution-free confidence interval ``(low, high)`` for the median of ``values``.

    The order statistics ``x_(k)`` and ``x_(n+1-k)`` with the largest ``k`` whose
    binomial coverage ``1 - 2·P(Bin(n, 1/2) < k)`` is at least ``level``; the
    sample's minimum and maximum where ``n`` is too small for ``level``.
    """
    xs = sorted(values)
    n = len(xs)
    k, below = 1, 0.5 ** n  # below: P(Bin(n, 1/2) < k)
    while k < n // 2:
        wider = below + math.comb(n, k) * 0.5 ** n  # P(Bin(n, 1/2) < k + 1)
        if 1.0 - 2.0 * wider < level:
            break
        k, below = k + 1, wider
    return xs[k - 1], xs[n - k]


def paired_summary(times, a, b):
    """``(median, low, high)``: the median of ``a``'s over ``b``'s per-repeat ratios
    and its 95% confidence interval (:func:`median_interval`)."""
    ratios = per_repeat_ratios(times, a, b)
    return (statistics.median(ratios), *median_interval(ratios))


#: the hand-written loops' keys in a timing dict, and their labels
HAND_LOOPS = {"hand": "Adam", "hand_fused": "Adam(fused=True)"}


def fastest_hand_key(t):
    """The key of the faster (by median) hand-written loop in a timing dict."""
    return min(HAND_LOOPS, key=t.__getitem__)


def fastest_hand(t):
    """(seconds, label) of the faster hand-written loop in a timing dict."""
    key = fastest_hand_key(t)
    return t[key], HAND_LOOPS[key]


class threads:
    """Run a block with ``torch.set_num_threads(n)``."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def peak_rss_child(which, epochs):
    """Run one fit in a fresh interpreter and return its peak RSS in MiB."""
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", which, "--epochs", str(epochs)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _rss_child(which, epochs):
    X, y = digits_images()
    if which == "softreg":
        softreg_cnn_fit(X, y, epochs)
    elif which == "raw":
        hand_cnn_fit(X, y, epochs)
    # "baseline": imports and data only
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)


# ----------------------------------------------------------------------
def load_average():
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.system()} {platform.release()}, {cpu}",
        "CPU cores (os.cpu_count)": os.cpu_count(),
        "torch threads (default)": torch.get_num_threads(),
        "GPU": gpu,
        "python / torch / skorch / sklearn": " / ".join([
            platform.python_version(), torch.__version__,
            __import__("skorch").__version__, __import__("sklearn").__version__,
        ]),
        "numba (compiled penalty loops, sk_softreg[fast])": _version_or("numba", "not installed"),
        "load average at start (1, 5, 15 min)": load_average(),
    }


def _version_or(module, missing):
    try:
        return __import__(module).__version__
    except ImportError:
        return missing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per comparison")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for this process (default: torch's choice)")
    parser.add_argument("--only", default=None, metavar="SECTIONS",
                        help="run only these sections, comma-separated, of 1, 2, 3, 4, d, e, "
                        "f (e.g. --only 1,3); the table then goes to stdout and to --output "
                        "only where one is given")
    parser.add_argument("--output", default=None,
                        help="where the table goes (default: benchmarks/results.md for a run "
                        "of every section)")
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        _rss_child(args.rss_child, args.epochs)
        return

    sections = {"1", "2", "3", "4", "d", "e", "f"}
    only = set(args.only.split(",")) if args.only else sections
    if not only <= sections:
        parser.error(f"--only: unknown section(s) {sorted(only - sections)}; "
                     f"choose among {sorted(sections)}")
    output = args.output or (None if args.only else ROOT / "benchmarks" / "results.md")

    def wanted(section):
        return section in only

    quick = args.quick
    repeats = args.repeats or (2 if quick else 5)
    epochs = 2 if quick else 10
    info = machine_info()
    rows = []
    t_start = time.perf_counter()

    def row(name, ours, ref, unit="s", target=None, higher_is_better=False, note="",
            paired=None):
        """``paired``, ``(times, a, b)``: the ratio is the paired median of ``a`` over ``b``
        (:func:`paired_summary`), and the note gives its interval and the ratio of medians."""
        ratio = ours / ref
        if paired is not None:
            ratio, low, high = paired_summary(*paired)
            n = len(paired[0][paired[1]])
            note = (f"{note}; " if note else "") + (
                f"ratio: median of {n} per-repeat ratios (95% CI {low:.2f}-{high:.2f}); "
                f"ratio of medians {ours / ref:.2f}"
            )
        if target is None:
            status = "report"
        else:
            met = ratio >= target if higher_is_better else ratio <= target
            status = ("yes" if met else "no") + f" ({'>=' if higher_is_better else '<='} {target})"
        rows.append((name, f"{ours:.3g} {unit}", f"{ref:.3g} {unit}", f"{ratio:.3f}", status, note))
        print(f"[{time.perf_counter() - t_start:6.1f}s] {name}: {ours:.3g} vs {ref:.3g} {unit}"
              f" -> ratio {ratio:.3f}", file=sys.stderr)

    # 1. MLP regression: the hand-written loop, plain skorch and scikit-learn, same module.
    # 1a's two sides are close and single fits here vary by +-10-20%, so the estimator
    # and the hand loops run 3x the repeats; skorch and scikit-learn, far from it, run
    # the usual number, again beside the estimator.
    if wanted("1"):
        Xr, yr = regression_data(20000)
        softreg_mlp_fit(Xr[:2000], yr[:2000], 1)  # warm-up (imports, allocator)
        times = {}
        t = interleaved({
            "softreg": lambda: softreg_mlp_fit(Xr, yr, epochs),
            "hand": lambda: hand_mlp_fit(Xr, yr, epochs),
            "hand_fused": lambda: hand_mlp_fit(Xr, yr, epochs, fused=True),
        }, 3 * repeats, record=times)
        mlp = f"MLP 20-64-64 regression, 20000x20, {epochs} ep, batch 64"
        hand, label = fastest_hand(t)
        row(f"1a. {mlp}: SoftRegRegressor / fastest hand-written loop (same module), "
            f"{3 * repeats} repeats", t["softreg"], hand, target=1.10,
            note=f"fastest: {label}; Adam {t['hand']:.3g} s, fused {t['hand_fused']:.3g} s",
            paired=(times, "softreg", fastest_hand_key(t)))
        t = interleaved({
            "softreg": lambda: softreg_mlp_fit(Xr, yr, epochs),
            "skorch": lambda: skorch_mlp_fit(Xr, yr, epochs),
            "sklearn": lambda: sklearn_mlp_fit(Xr, yr, epochs),
        }, repeats)
        row("1b. same: SoftRegRegressor / plain skorch NeuralNetRegressor (same module)",
            t["softreg"], t["skorch"], target=0.5)
        row("1c. same: SoftRegRegressor / sklearn MLPRegressor (hidden (64, 64), adam)",
            t["softreg"], t["sklearn"], note="sklearn: numpy, float64")

    if wanted("2") or wanted("3"):
        X, y = digits_images()
        softreg_cnn_fit(X, y, 1)  # warm-up

    # 2. CNN on digits vs the hand-written loop
    if wanted("2"):
        times = {}
        t = interleaved({
            "softreg": lambda: softreg_cnn_fit(X, y, epochs),
            "hand": lambda: hand_cnn_fit(X, y, epochs),
            "hand_fused": lambda: hand_cnn_fit(X, y, epochs, fused=True),
        }, repeats, record=times)
        hand, label = fastest_hand(t)
        row(f"2. CNN digits ({len(X)} imgs), {epochs} ep, batch 64: SoftRegCNNClassifier / "
            "fastest hand-written loop (same module)", t["softreg"], hand, target=1.05,
            note=f"fastest: {label}; Adam {t['hand']:.3g} s, fused {t['hand_fused']:.3g} s",
            paired=(times, "softreg", fastest_hand_key(t)))

    # 3. penalties on vs off, at 1 and 2 torch threads
    # with, as a floor, the same penalties in a hand-written loop (no history values).
    # Single fits on this machine vary by +-10-20%, so row 3 spends twice row 2's
    # budget of fit epochs on 3-epoch fits: 20/3 as many repeats, more pairs, a
    # tighter median. Costs outside the training steps are the same on and off.
    if wanted("3"):
        epochs3 = max(2, epochs * 3 // 10)
        repeats3 = 2 * -(-repeats * epochs // epochs3)
        for n_threads in (1, 2):
            times = {}
            with threads(n_threads):
                t = interleaved({
                    "on": lambda: softreg_cnn_fit(X, y, epochs3, **PENALTIES),
                    "off": lambda: softreg_cnn_fit(X, y, epochs3),
                    "hand_on": lambda: hand_penalized_cnn_fit(X, y, epochs3, **PENALTIES),
                    "hand_off": lambda: hand_penalized_cnn_fit(X, y, epochs3),
                }, repeats3, record=times)
            compiled = bool(_numba_loops._compiled())
            kernels = ("prox and penalty values in numba's compiled loops" if compiled
                       else "numba not installed: prox and penalty values in torch kernels")
            row(f"3. same CNN, {epochs3} ep, {repeats3} repeats, {n_threads} torch thread(s): "
                "lambda1=lambda2=1e-4, alpha=0.1 / all zero", t["on"], t["off"],
                target=1.10 if compiled else 1.30,
                note=kernels, paired=(times, "on", "off"))
            row(f"3f. floor: hand-written loop, same CNN and penalties in eager torch, {n_threads} "
                "thread(s): on / off", t["hand_on"], t["hand_off"],
                note="lambda2 in fused Adam's weight_decay, KL on the CE's log-softmax, "
                "prox in foreach kernels, no penalty values for history",
                paired=(times, "hand_on", "hand_off"))

    # 4. the default SoftRegCNN on 4,000 single-channel 28x28 images: images/s
    if wanted("4"):
        X28, y28 = images_28(4000)
        epochs28 = 1 if quick else 2
        n_images = epochs28 * len(X28)
        softreg_cnn_fit(X28[:256], y28[:256], 1)
        t = interleaved({
            "softreg": lambda: softreg_cnn_fit(X28, y28, epochs28),
            "softreg_penalties": lambda: softreg_cnn_fit(X28, y28, epochs28, **PENALTIES),
            "hand": lambda: hand_cnn_fit(X28, y28, epochs28),
            "hand_fused": lambda: hand_cnn_fit(X28, y28, epochs28, fused=True),
            "channels_last": lambda: hand_cnn_fit(X28, y28, epochs28, fused=True, channels_last=True),
            "bf16": lambda: hand_cnn_fit(X28, y28, epochs28, fused=True, autocast_bf16=True),
        }, repeats)
        hand, label = fastest_hand(t)
        row(f"4a. default SoftRegCNN, {len(X28)} 1x28x28 images, {epochs28} ep, batch 64: images/s "
            "SoftRegCNNClassifier / fastest hand-written loop", n_images / t["softreg"],
            n_images / hand, unit="img/s", target=0.95, higher_is_better=True,
            note=f"fastest: {label}; ours stores the conv weights channels_last (its CPU "
            "default), the hand loop keeps torch's default layout")
        row("4b. same hand-written loop (fused Adam): images/s with channels_last / default",
            n_images / t["channels_last"], n_images / t["hand_fused"], unit="img/s")
        row("4c. same: images/s with bfloat16 autocast / float32 (changes the numerics)",
            n_images / t["bf16"], n_images / t["hand_fused"], unit="img/s")
        # the penalties' cost grows with the number of weights, not with the images:
        # row 3's ratio on a CNN whose batches carry more work per weight
        row("4d. same images, SoftRegCNNClassifier: lambda1=lambda2=1e-4, alpha=0.1 / all zero",
            t["softreg_penalties"], t["softreg"], note="default torch threads; compare row 3")

    # d. GridSearchCV parallel speedup
    if wanted("d"):
        Xg, yg = regression_data(2000 if quick else 5000)
        grid_epochs = 3 if quick else 20
        grid_search_fit(Xg[:300], yg[:300], 2, 1)  # start the worker pool once
        t = interleaved({
            "n_jobs=1": lambda: grid_search_fit(Xg, yg, 1, grid_epochs),
            "n_jobs=2": lambda: grid_search_fit(Xg, yg, 2, grid_epochs),
        }, 1 if quick else 2)
        row(f"d. GridSearchCV 4 candidates x 3 folds, {len(Xg)}x20, {grid_epochs} ep: speedup "
            "n_jobs=1 time / n_jobs=2 time", t["n_jobs=1"], t["n_jobs=2"], target=1.6,
            higher_is_better=True, note="worker pool warm")

    # e. peak RSS
    if wanted("e"):
        base = peak_rss_child("baseline", epochs)
        ours = peak_rss_child("softreg", epochs)
        raw = peak_rss_child("raw", epochs)
        row("e. peak RSS of a CNN digits fit (child process): SoftRegCNNClassifier / hand loop",
            ours, raw, unit="MiB", note=f"interpreter + imports + data alone: {base:.0f} MiB")

    # f. GPU throughput
    if wanted("f"):
        if torch.cuda.is_available():
            Xc, yc = digits_images(n_copies=20)
            gpu_epochs = 2 if quick else 5
            softreg_cnn_fit(Xc[:2048], yc[:2048], 1, 256, device="cuda")
            hand_cnn_fit(Xc[:2048], yc[:2048], 1, 256, device="cuda")
            t = interleaved({
                "softreg": lambda: softreg_cnn_fit(Xc, yc, gpu_epochs, 256, device="cuda"),
                "hand": lambda: hand_cnn_fit(Xc, yc, gpu_epochs, 256, device="cuda"),
                "hand_fused": lambda: hand_cnn_fit(Xc, yc, gpu_epochs, 256, device="cuda", fused=True),
            }, repeats)
            n_gpu = gpu_epochs * len(Xc)
            hand, label = fastest_hand(t)
            row("f. GPU images/s, CNN digits, batch 256: SoftRegCNNClassifier / fastest hand loop",
                n_gpu / t["softreg"], n_gpu / hand, unit="img/s",
                note=f"{torch.cuda.get_device_name(0)}; fastest: {label}")
        else:
            rows.append(("f. GPU images/s, batch 256", "-", "-", "-", "skipped",
                         "CUDA is not available on this machine"))
            print("f. skipped: CUDA is not available on this machine", file=sys.stderr)

    total = time.perf_counter() - t_start
    lines = ["# sk_softreg benchmarks", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [
        f"- load average at end (1, 5, 15 min): {load_average()}",
        f"- command: `python benchmarks/run.py {' '.join(sys.argv[1:])}`, "
        f"{repeats} interleaved repeat(s) (d: {1 if quick else 2}), medians; "
        f"total {total:.0f} s",
        "- ratio: ours / reference, of the two medians; in rows 1a, 2, 3 and 3f, which pair "
        "two fits repeat by repeat, the median of the per-repeat ratios (interval and ratio "
        "of medians in the note)",
        "",
        "| benchmark | ours | reference | ratio | target met | note |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if output is not None:
        Path(output).write_text(text)


if __name__ == "__main__":
    main()
