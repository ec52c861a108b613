"""Speed benchmarks of sk_softreg against PyTorch, skorch and scikit-learn.

Run from the repository root::

    python benchmarks/run.py            # full run (a few minutes on 2 cores)
    python benchmarks/run.py --quick    # smoke run: fewer epochs and repeats

Every comparison runs both sides in this one process, alternating them
(A, B, A, B, ...), and reports the median wall time of each side and the
ratio of the medians. Peak memory (e) is measured in fresh child processes.
The Markdown table goes to stdout and to ``benchmarks/results.md``.
"""

import argparse
import datetime
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
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

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor  # noqa: E402
from sk_softreg.modules import GaussianMLP, SoftRegCNN  # noqa: E402


# ----------------------------------------------------------------------
# data and reference implementations
def digits_images(n_copies=1):
    X, y = load_digits(return_X_y=True)
    X = np.tile((X / 16.0).astype(np.float32), (n_copies, 1))
    return X.reshape(-1, 1, 8, 8), np.tile(y, n_copies).astype(np.int64)


def raw_cnn_fit(X, y, epochs, batch_size, device="cpu", seed=0):
    """A hand-written PyTorch loop: same module, Adam(lr=2e-3), cross-entropy, shuffling."""
    torch.manual_seed(seed)
    model = SoftRegCNN(input_shape=X.shape[1:], n_classes=int(y.max()) + 1).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    criterion = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.as_tensor(X, device=device), torch.as_tensor(y, device=device)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(Xt), device=device)
        for start in range(0, len(Xt), batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = criterion(model(Xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
    if device != "cpu":
        torch.cuda.synchronize()
    return model


def softreg_cnn_fit(X, y, epochs, batch_size, device="cpu", **penalties):
    clf = SoftRegCNNClassifier(
        max_epochs=epochs, batch_size=batch_size, random_state=0, device=device, **penalties
    )
    clf.fit(X, y)
    if device != "cpu":
        torch.cuda.synchronize()
    return clf


class MeanHalfMSE(torch.nn.Module):
    """0.5 * MSE on the mean column of GaussianMLP's (mean, log-var) output."""

    def forward(self, y_pred, y_true):
        return 0.5 * torch.nn.functional.mse_loss(y_pred[:, :1], y_true)


def regression_data(n_samples):
    X, y = make_regression(n_samples=n_samples, n_features=20, noise=10.0, random_state=0)
    y = (y - y.mean()) / y.std()
    return X.astype(np.float32), y.astype(np.float32)


def softreg_regressor_fit(X, y, epochs):
    return SoftRegRegressor(max_epochs=epochs, batch_size=64, random_state=0, device="cpu").fit(X, y)


def skorch_regressor_fit(X, y, epochs):
    torch.manual_seed(0)
    net = NeuralNetRegressor(
        GaussianMLP, module__n_features=X.shape[1], module__n_outputs=1,
        criterion=MeanHalfMSE, optimizer=torch.optim.Adam, lr=1e-3, max_epochs=epochs,
        batch_size=64, train_split=None, iterator_train__shuffle=True, device="cpu", verbose=0,
    )
    return net.fit(X, y.reshape(-1, 1))


def sklearn_mlp_fit(X, y, epochs):
    mlp = MLPRegressor(
        hidden_layer_sizes=(64,), batch_size=64, max_iter=epochs, learning_rate_init=1e-3,
        n_iter_no_change=epochs + 1, tol=0.0, random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return mlp.fit(X, y)


def grid_search_fit(X, y, n_jobs, epochs):
    grid = {"lambda2": [0.0, 1e-4], "alpha": [0.0, 0.1]}
    est = SoftRegRegressor(max_epochs=epochs, batch_size=64, random_state=0, device="cpu")
    return GridSearchCV(est, grid, cv=3, n_jobs=n_jobs).fit(X, y)


# ----------------------------------------------------------------------
# timing helpers
def interleaved(funcs, repeats):
    """Median seconds of each callable, running them alternately ``repeats`` times."""
    times = {name: [] for name in funcs}
    for _ in range(repeats):
        for name, func in funcs.items():
            start = time.perf_counter()
            func()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


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
        softreg_cnn_fit(X, y, epochs, 64)
    elif which == "raw":
        raw_cnn_fit(X, y, epochs, 64)
    # "baseline": imports and data only
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)


# ----------------------------------------------------------------------
def machine_info():
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
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
        "torch threads": torch.get_num_threads(),
        "GPU": gpu,
        "python / torch / skorch / sklearn": " / ".join([
            platform.python_version(), torch.__version__,
            __import__("skorch").__version__, __import__("sklearn").__version__,
        ]),
        "load average at start (1, 5, 15 min)": load,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per comparison")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for this process (default: torch's choice)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results.md"))
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        _rss_child(args.rss_child, args.epochs)
        return

    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    epochs = 2 if quick else 10
    info = machine_info()
    rows = []
    t_start = time.perf_counter()

    def row(name, ours, ref, unit="s", target=None, higher_is_better=False, note=""):
        ratio = ours / ref
        if target is None:
            status = "report"
        else:
            met = ratio >= target if higher_is_better else ratio <= target
            status = ("yes" if met else "no") + f" ({'>=' if higher_is_better else '<='} {target})"
        rows.append((name, f"{ours:.3g} {unit}", f"{ref:.3g} {unit}", f"{ratio:.2f}", status, note))
        print(f"[{time.perf_counter() - t_start:6.1f}s] {name}: {ours:.3g} vs {ref:.3g} {unit}"
              f" -> ratio {ratio:.2f}", file=sys.stderr)

    # a. default CNN vs a hand-written loop
    X, y = digits_images()
    softreg_cnn_fit(X, y, 1, 64)  # warm-up (imports, allocator)
    t = interleaved({
        "softreg": lambda: softreg_cnn_fit(X, y, epochs, 64),
        "raw": lambda: raw_cnn_fit(X, y, epochs, 64),
    }, repeats)
    row(f"a. CNN digits ({len(X)} imgs), {epochs} ep, batch 64: SoftRegCNNClassifier / raw torch loop",
        t["softreg"], t["raw"], target=1.10)

    # b. penalties on vs off
    t = interleaved({
        "reg": lambda: softreg_cnn_fit(X, y, epochs, 64, lambda1=1e-4, lambda2=1e-4, alpha=0.1),
        "plain": lambda: softreg_cnn_fit(X, y, epochs, 64),
    }, repeats)
    row("b. same, lambda1=lambda2=1e-4, alpha=0.1 / all zero", t["reg"], t["plain"], target=1.10)

    # c. MLP regression vs skorch and sklearn
    Xr, yr = regression_data(20000)
    t = interleaved({
        "softreg": lambda: softreg_regressor_fit(Xr, yr, epochs),
        "skorch": lambda: skorch_regressor_fit(Xr, yr, epochs),
        "sklearn": lambda: sklearn_mlp_fit(Xr, yr, epochs),
    }, repeats)
    row(f"c1. MLP regression 20000x20, {epochs} ep, batch 64: SoftRegRegressor / skorch "
        "NeuralNetRegressor (same module)", t["softreg"], t["skorch"], target=0.5)
    row("c2. same: SoftRegRegressor / sklearn MLPRegressor (hidden 64, adam)",
        t["softreg"], t["sklearn"], note="goal <= 1.0; sklearn has no dropout")

    # d. GridSearchCV parallel speedup
    Xg, yg = regression_data(2000 if quick else 5000)
    grid_epochs = 3 if quick else 20
    grid_search_fit(Xg[:300], yg[:300], 2, 1)  # start the worker pool once
    t = interleaved({
        "n_jobs=1": lambda: grid_search_fit(Xg, yg, 1, grid_epochs),
        "n_jobs=2": lambda: grid_search_fit(Xg, yg, 2, grid_epochs),
    }, max(1, repeats - 1))
    row(f"d. GridSearchCV 4 candidates x 3 folds, {len(Xg)}x20, {grid_epochs} ep: speedup "
        "n_jobs=1 time / n_jobs=2 time", t["n_jobs=1"], t["n_jobs=2"], target=1.6,
        higher_is_better=True, note="worker pool warm")

    # e. peak RSS
    base = peak_rss_child("baseline", epochs)
    ours = peak_rss_child("softreg", epochs)
    raw = peak_rss_child("raw", epochs)
    row("e. peak RSS of a CNN fit (child process): SoftRegCNNClassifier / raw loop",
        ours, raw, unit="MiB", note=f"interpreter + imports + data alone: {base:.0f} MiB")

    # f. GPU throughput
    if torch.cuda.is_available():
        Xc, yc = digits_images(n_copies=20)
        gpu_epochs = 2 if quick else 5
        softreg_cnn_fit(Xc[:2048], yc[:2048], 1, 256, device="cuda")
        raw_cnn_fit(Xc[:2048], yc[:2048], 1, 256, device="cuda")
        t = interleaved({
            "softreg": lambda: softreg_cnn_fit(Xc, yc, gpu_epochs, 256, device="cuda"),
            "raw": lambda: raw_cnn_fit(Xc, yc, gpu_epochs, 256, device="cuda"),
        }, repeats)
        n_images = gpu_epochs * len(Xc)
        row("f. GPU images/s, batch 256: SoftRegCNNClassifier / raw loop",
            n_images / t["softreg"], n_images / t["raw"], unit="img/s",
            note=torch.cuda.get_device_name(0))
        rows[-1] = rows[-1][:4] + ("report",) + rows[-1][5:]
    else:
        rows.append(("f. GPU images/s, batch 256", "-", "-", "-", "skipped",
                     "CUDA is not available on this machine"))
        print("f. skipped: CUDA is not available on this machine", file=sys.stderr)

    total = time.perf_counter() - t_start
    lines = ["# sk_softreg benchmarks", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [
        f"- command: `python benchmarks/run.py {' '.join(sys.argv[1:])}`, "
        f"{repeats} interleaved repeat(s), medians; total {total:.0f} s",
        "",
        "| benchmark | ours | reference | ratio | target met | note |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
