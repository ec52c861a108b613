"""BatchedGridSearchCV against GridSearchCV(n_jobs=2): wall time, peak memory, equal results.

Run from the repository root::

    python benchmarks/search.py                 # all workloads, written to benchmarks/search.md
    python benchmarks/search.py --quick         # a smoke run (fewer epochs, 1 repeat), not written

Workloads (issue 35), each with the same grid and folds for every search:

- ``regressor``: ``SoftRegRegressor`` defaults (early stopping, size-based dropout,
  batch size and learning rate) on Bikeshare (8,645 rows; one-hot calendar
  columns and standardized numeric ones, encoded once up front), the grid
  ``alpha`` in {0, 0.1} x ``lambda1`` in {0, 1e-4} x ``lambda2`` in {0, 1e-3},
  ``KFold(5, shuffle=True, random_state=0)``;
- ``classifier_mlp``: ``SoftRegCNNClassifier`` with an MLP module (``nn.Flatten``,
  ``nn.Linear``) on the digits table, the main job's grid, ``KFold(5, shuffle=True)``;
- ``cnn``: the main job's search on digits (the default CNN, its grid, 3 stratified
  folds on the 75% training part), stacked.

Each search runs in a fresh subprocess (so that its peak RSS, children included,
is its own) with ``refit=False``: the refit is one ordinary fit in every search.
The regressor and the MLP classifier train with their default epochs (the
regressor stops early); the CNN is capped at 10 epochs and runs once unless
``--cnn-repeats`` says more, to keep the run to minutes (``--max-epochs`` caps every
workload). Torch uses one thread in
``BatchedGridSearchCV(n_jobs=1, 1 thread)``, as in each of ``GridSearchCV(n_jobs=2)``'s
workers; ``BatchedGridSearchCV(n_jobs=1)`` is one process with torch's default threads
(one per core), what a user gets without setting anything. Reported: the median wall time over the repeats, the ratio to
``GridSearchCV(n_jobs=2)``, the peak RSS (the largest of the process and its
workers), the largest difference of a candidate's ``mean_test_score`` from
``GridSearchCV``'s, and whether the best candidates agree (``same``), or the stacked
search's best is within one standard deviation of ``GridSearchCV``'s best fold
scores (``within 1 std``). ``--noise-floor`` adds ``GridSearchCV(n_jobs=2)`` over the
estimator with ``random_state=1``: its score differences from the reference (seed 0)
are what another random draw of the same procedure gives, the scale against which the
stacked searches' differences (their members draw their own dropout masks) are read.
``--bf16`` adds ``BatchedGridSearchCV(n_jobs=1)`` and ``(n_jobs=2)`` with
``mixed_precision="bf16"`` (bfloat16 autocast in the stacks' training forward passes;
it pays only on a CPU with native bfloat16).
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

WORKLOADS = ("regressor", "classifier_mlp", "cnn")
SEARCHES = (
    "GridSearchCV(n_jobs=2)", "BatchedGridSearchCV(n_jobs=1, 1 thread)", "BatchedGridSearchCV(n_jobs=2)",
    "BatchedGridSearchCV(n_jobs=1)",
)
#: with ``--bf16``: the stacked searches with ``mixed_precision="bf16"``
BF16 = ("BatchedGridSearchCV(n_jobs=1), bf16", "BatchedGridSearchCV(n_jobs=2), bf16")
#: GridSearchCV with the estimator's random_state=1 instead of 0: its score differences from
#: the reference are those of another random draw of the same procedure
NOISE_FLOOR = "GridSearchCV(n_jobs=2), random_state=1"
#: epochs per fit where the run caps them (None: the estimator's default) and repeats
EPOCHS = {"regressor": None, "classifier_mlp": None, "cnn": 10}


def bikeshare():
    """Bikeshare from ISLP (or ``$BIKESHARE_CSV``), encoded: X float32, y = log1p(bikers)."""
    import pandas as pd

    path = os.environ.get("BIKESHARE_CSV")
    if path is None:
        from ISLP import load_data

        df = load_data("Bikeshare")
    else:
        df = pd.read_csv(path)
    categorical = ["season", "mnth", "hr", "weekday", "weathersit"]
    numeric = ["day", "holiday", "workingday", "temp", "atemp", "hum", "windspeed"]
    codes = pd.get_dummies(df[categorical].astype(str)).to_numpy(np.float32)
    values = df[numeric].to_numpy(np.float64)
    values = (values - values.mean(0)) / values.std(0)
    return np.hstack([values, codes]).astype(np.float32), np.log1p(df["bikers"].to_numpy(float))


def flat_mlp():
    """A module class for the classifier: Flatten, Linear(·, 128), ReLU, Linear(128, K)."""
    from torch import nn

    class FlatMLP(nn.Module):
        def __init__(self, input_shape=(1, 8, 8), n_classes=10):
            super().__init__()
            self.net = nn.Sequential(
                nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 128), nn.ReLU(),
                nn.Linear(128, n_classes),
            )

        def forward(self, X):
            return self.net(X)

    return FlatMLP


def setup(workload, max_epochs):
    """``(estimator, grid, X, y, cv, scoring)`` of a workload."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor
    from sk_softreg._demo import DEFAULT_GRID

    epochs = {} if max_epochs is None else {"max_epochs": max_epochs}
    if workload == "regressor":
        X, y = bikeshare()
        grid = {"alpha": [0.0, 0.1], "lambda1": [0.0, 1e-4], "lambda2": [0.0, 1e-3]}
        est = SoftRegRegressor(random_state=0, device="cpu", **epochs)
        return est, grid, X, y, KFold(5, shuffle=True, random_state=0), None
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    if workload == "classifier_mlp":
        est = SoftRegCNNClassifier(module=flat_mlp(), random_state=0, device="cpu", **epochs)
        return est, DEFAULT_GRID, X, y, KFold(5, shuffle=True, random_state=0), None
    X, _, y, _ = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    est = SoftRegCNNClassifier(random_state=0, device="cpu", **epochs)
    return est, DEFAULT_GRID, X, y, StratifiedKFold(3), None


def run_one(workload, search, max_epochs):
    """Fit one search; the result as a dict (in this process)."""
    import warnings

    import torch
    from sklearn.model_selection import GridSearchCV

    from sk_softreg import BatchedGridSearchCV

    est, grid, X, y, cv, scoring = setup(workload, max_epochs)
    if "random_state=1" in search:  # the same search, another random draw (the noise floor)
        est.set_params(random_state=1)
    if "1 thread" in search:
        torch.set_num_threads(1)  # as each of GridSearchCV(n_jobs=2)'s workers
    n_jobs = 2 if "n_jobs=2" in search else None
    if search.startswith("Batched"):
        precision = "bf16" if search.endswith("bf16") else None
        searcher = BatchedGridSearchCV(est, grid, cv=cv, scoring=scoring, n_jobs=n_jobs,
                                       refit=False, mixed_precision=precision)
    else:
        searcher = GridSearchCV(est, grid, cv=cv, scoring=scoring, n_jobs=n_jobs, refit=False)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = searcher.fit(X, y)
    seconds = time.perf_counter() - start
    rss = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    results = fitted.cv_results_
    return {
        "seconds": seconds,
        "rss_mb": rss / 1024,
        "scores": [float(v) for v in results["mean_test_score"]],
        "std": [float(v) for v in results["std_test_score"]],
        "best": int(np.argmin(results["rank_test_score"])),
        "stacks": getattr(fitted, "n_stacks_", None),
        "fallbacks": getattr(fitted, "n_fallback_fits_", None),
        "warnings": sorted({str(w.message)[:120] for w in caught if "stacked" in str(w.message)}),
    }


def run_subprocess(workload, search, max_epochs):
    cmd = [sys.executable, __file__, "--one", workload, search]
    if max_epochs is not None:
        cmd += ["--max-epochs", str(max_epochs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare(workload, repeats, max_epochs, searches):
    """All searches of a workload, interleaved over the repeats."""
    runs = {s: [] for s in searches}
    for _ in range(repeats):
        for search in searches:
            runs[search].append(run_subprocess(workload, search, max_epochs))
    return runs


def table(all_runs):
    lines = [
        "| workload | search | wall s (median) | ratio to GridSearchCV(n_jobs=2) | peak RSS MB "
        "| max abs. diff. of mean_test_score | best candidate | stacks / fallback fits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for workload, runs in all_runs.items():
        reference = runs[SEARCHES[0]]
        ref_time = float(np.median([r["seconds"] for r in reference]))
        ref_scores = np.asarray(reference[0]["scores"])
        for search, rs in runs.items():
            seconds = float(np.median([r["seconds"] for r in rs]))
            diff = float(np.max(np.abs(np.asarray(rs[0]["scores"]) - ref_scores)))
            same = _same_best(rs[0], reference[0])
            stacks = "" if rs[0]["stacks"] is None else f"{rs[0]['stacks']} / {rs[0]['fallbacks']}"
            lines.append(
                f"| {workload} | {search} | {seconds:.2f} | {seconds / ref_time:.2f} | "
                f"{max(r['rss_mb'] for r in rs):.0f} | {diff:.4f} | {same} | {stacks} |"
            )
    return "\n".join(lines)


def _same_best(run, reference):
    """"same", "within 1 std" (of the reference's best candidate's fold scores) or "no"."""
    best, ref = run["best"], reference["best"]
    if best == ref:
        return "same"
    gap = reference["scores"][ref] - reference["scores"][best]
    return "within 1 std" if gap < reference["std"][ref] else "no"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, metavar=("WORKLOAD", "SEARCH"), help=argparse.SUPPRESS)
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cnn-repeats", type=int, default=1,
                        help="repeats of the CNN workload (default 1: each takes minutes)")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--noise-floor", action="store_true",
                        help=f"also run {NOISE_FLOOR}: how far another random draw moves the scores")
    parser.add_argument("--bf16", action="store_true",
                        help="also run the stacked searches with mixed_precision='bf16'")
    parser.add_argument("--note", default=(
        "The machine was shared: 2 CPU cores, with other engineers' jobs running during the "
        "run, so the ratios are indicative."))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "search.md"))
    args = parser.parse_args(argv)
    if args.one:
        json.dump(run_one(*args.one, args.max_epochs), sys.stdout)
        sys.stdout.write("\n")
        return
    all_runs, caps = {}, {}
    for workload in args.workloads:
        epochs = args.max_epochs if args.max_epochs is not None else EPOCHS[workload]
        repeats = args.cnn_repeats if workload == "cnn" else args.repeats
        if args.quick:
            epochs, repeats = epochs or 3, 1
        caps[workload] = (epochs, repeats)
        searches = SEARCHES + (BF16 if args.bf16 else ()) + ((NOISE_FLOOR,) if args.noise_floor else ())
        all_runs[workload] = compare(workload, repeats, epochs, searches)
    text = table(all_runs)
    sys.stderr.write(text + "\n")
    if args.quick:
        return
    details = {w: {s: rs[0] for s, rs in runs.items()} for w, runs in all_runs.items()}
    header = (
        f"# BatchedGridSearchCV against GridSearchCV\n\n"
        f"Written by `python benchmarks/search.py {' '.join(argv or sys.argv[1:])}` on "
        f"{datetime.date.today().isoformat()}, {platform.platform()}, {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.2f} at the end.\n\n"
        f"{args.note} Each search ran in a fresh subprocess; "
        "GridSearchCV(n_jobs=2)'s time includes starting its two joblib workers, as a user's "
        "does. refit=False; searches interleaved within each repeat.\n\n"
        + "".join(
            f"- {w}: epochs per fit {'the defaults' if e is None else f'at most {e}'}, "
            f"median of {r} repeat(s)\n"
            for w, (e, r) in caps.items()
        )
        + "\n"
    )
    with open(args.out, "w") as f:
        f.write(header + text + "\n\n## Per-candidate mean_test_score (first repeat)\n\n```json\n")
        f.write(json.dumps(details, indent=1) + "\n```\n")


if __name__ == "__main__":
    main()
