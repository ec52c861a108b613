"""The stacked CNN search on a GPU: images/s against one fit, and against GridSearchCV.

Run from the repository root, on a machine with CUDA::

    python benchmarks/search_gpu.py                        # written to benchmarks/search_gpu.md
    python benchmarks/search_gpu.py --device cpu --quick   # a smoke run anywhere, not written

Issue 35's GPU row: the stacked CNN's images/s against one fit. For each workload,
in one process, after one warm-up round (CUDA's start, cuDNN's choice of
algorithms), every repeat runs each side once, in a rotated order:

- ``one fit``: ``SoftRegCNNClassifier`` (the default CNN, a fixed number of
  epochs, early stopping off) on the first fold's training rows;
- ``BatchedGridSearchCV``: the main job's grid (``DEFAULT_GRID``, 8 candidates)
  over 3 stratified folds, ``refit=False``: 24 members trained as one stack
  (with ``--bf16`` also a row with ``mixed_precision="bf16"``);
- ``GridSearchCV(n_jobs=1)``: the same grid and folds, one fit after another (one GPU).

images/s is the training images the side processes (rows x epochs, summed over
its fits) per second of wall time, scoring included for the searches. Also
reported: the median wall time, the ratio to ``GridSearchCV``, the peak GPU
memory (``torch.cuda.max_memory_allocated``), the largest difference of a
candidate's ``mean_test_score`` from ``GridSearchCV``'s, and the stacked
search's fallback fits (0 when every fit was stacked). Workloads: the digits
(8x8, the main job's 75% training part) and 28x28 images (the digits upsampled
and tiled, as row 4 of ``benchmarks/run.py``).
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from sklearn.model_selection import (
    GridSearchCV,
    ParameterGrid,
    StratifiedKFold,
    train_test_split,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import (  # noqa: E402
    digits_images,
    fixed_epochs,
    images_28,
    interleaved,
    machine_info,
)

from sk_softreg import BatchedGridSearchCV, SoftRegCNNClassifier  # noqa: E402
from sk_softreg._demo import DEFAULT_GRID  # noqa: E402

WORKLOADS = ("digits", "images28")


def workload_data(name, quick):
    """The training images and labels of a workload."""
    if name == "digits":
        X, y = digits_images()
        X, _, y, _ = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
        return X, y
    return images_28(1000 if quick else 4000)


def _synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def sides(X, y, device, epochs, bf16):
    """``{name: (callable, training images it processes)}``; each callable returns
    the fitted object."""
    cv = StratifiedKFold(3)
    est = SoftRegCNNClassifier(**fixed_epochs(SoftRegCNNClassifier, epochs), random_state=0,
                               device=device)
    folds = list(cv.split(X, y))
    fit_rows = len(folds[0][0])
    search_images = len(ParameterGrid(DEFAULT_GRID)) * sum(len(tr) for tr, _ in folds) * epochs

    def one_fit():
        fitted = clone(est).fit(X[folds[0][0]], y[folds[0][0]])
        _synchronize(device)
        return fitted

    def search(cls, **kwargs):
        def run():
            fitted = cls(est, DEFAULT_GRID, cv=cv, refit=False, **kwargs).fit(X, y)
            _synchronize(device)
            return fitted

        return run

    out = {
        "one fit": (one_fit, fit_rows * epochs),
        "BatchedGridSearchCV": (search(BatchedGridSearchCV), search_images),
        "GridSearchCV(n_jobs=1)": (search(GridSearchCV), search_images),
    }
    if bf16:
        out["BatchedGridSearchCV, bf16"] = (
            search(BatchedGridSearchCV, mixed_precision="bf16"), search_images)
    return out


def measure(funcs, repeats, device):
    """Each side's wall times over ``repeats`` rotated rounds (``run.interleaved``), after
    one untimed warm-up round; its peak GPU memory, and its last fitted object."""
    cuda = device.startswith("cuda")
    peak = dict.fromkeys(funcs, float("nan"))
    last = {}

    def tracked(name):
        def call():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            last[name] = funcs[name][0]()
            if cuda:
                peak[name] = torch.cuda.max_memory_allocated() / 2**20

        return call

    calls = {name: tracked(name) for name in funcs}
    for call in calls.values():
        call()
    times = {}
    interleaved(calls, repeats, record=times)
    return times, peak, last


def rows_of(workload, funcs, times, peak, last, epochs):
    reference = last["GridSearchCV(n_jobs=1)"].cv_results_["mean_test_score"]
    grid_s = statistics.median(times["GridSearchCV(n_jobs=1)"])
    fit_rate = funcs["one fit"][1] / statistics.median(times["one fit"])
    lines = []
    for name, (_, images) in funcs.items():
        seconds = statistics.median(times[name])
        rate = images / seconds
        result = last[name]
        if hasattr(result, "cv_results_"):
            diff = float(np.max(np.abs(result.cv_results_["mean_test_score"] - reference)))
            ratio = f"{seconds / grid_s:.2f}"
            fallback = str(getattr(result, "n_fallback_fits_", ""))
        else:
            diff, ratio, fallback = None, "", ""
        lines.append(
            f"| {workload} | {name} | {epochs} | {seconds:.2f} | {rate:,.0f} | "
            f"{rate / fit_rate:.2f} | {ratio} | {peak[name]:.0f} | "
            f"{'' if diff is None else f'{diff:.4f}'} | {fallback} |"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="'cuda' (default) or 'cpu' for a smoke run")
    parser.add_argument("--quick", action="store_true", help="2 epochs, 1 repeat, 1,000 images; not written")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--bf16", action="store_true", help="add the stacked search in bfloat16")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "search_gpu.md"))
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here; run with --device cpu for a smoke run")
    repeats = 1 if args.quick else args.repeats
    epochs = {"digits": 2 if args.quick else 10, "images28": 2 if args.quick else 5}
    start = time.perf_counter()
    table = [
        "| workload | side | epochs per fit | wall s (median) | images/s | images/s / one fit's "
        "| ratio to GridSearchCV | peak GPU MB | max abs. diff. of mean_test_score "
        "| fallback fits |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workload in args.workloads:
        X, y = workload_data(workload, args.quick)
        funcs = sides(X, y, args.device, epochs[workload], args.bf16)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            times, peak, last = measure(funcs, repeats, args.device)
        table += rows_of(workload, funcs, times, peak, last, epochs[workload])
        print(f"{workload}: done at {time.perf_counter() - start:.0f} s", file=sys.stderr)
    info = machine_info()
    text = "\n".join([
        "# The stacked CNN search on a GPU",
        "",
        f"Written by `python benchmarks/search_gpu.py {' '.join(argv or sys.argv[1:])}` "
        f"on device `{args.device}`; {repeats} repeat(s) after a warm-up round; total "
        f"{time.perf_counter() - start:.0f} s.",
        "",
        *[f"- {key}: {value}" for key, value in info.items()],
        "",
        *table,
        "",
    ])
    print(text)
    if not args.quick:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
