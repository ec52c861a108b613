"""A/B: ``alpha > 0`` candidates in stacks with the ``alpha == 0`` ones, or of their own.

The regressor grid of ``search.py`` under ``BatchedGridSearchCV(n_jobs=1)``, in
interleaved subprocesses: ``merged`` is the code as it is (one stack runs the KL's
dropout-free pass for all its members; the ``alpha == 0`` ones weigh their KL by
0); ``split`` patches ``stack_key`` to keep the candidates whose KL needs that
pass apart, as the code did before. Prints each run's seconds, stacks and
``mean_test_score``, then the medians.

Run from the repository root::

    python benchmarks/stack_split_ab.py --threads 2 --repeats 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("split", "merged")


def split_alpha_stacks():
    """Patch this process so that the KL's dropout-free pass splits the stacks."""
    import sk_softreg.model_selection as model_selection

    key = model_selection.stack_key
    model_selection.stack_key = lambda member: (*key(member), bool(member.net._kl_dropout_layers()))


def run_one(mode, threads):
    sys.path[:0] = [os.path.join(ROOT, "benchmarks"), ROOT]
    import search
    import torch

    from sk_softreg import BatchedGridSearchCV

    if mode == "split":
        split_alpha_stacks()
    torch.set_num_threads(threads)
    est, grid, X, y, cv, _ = search.setup("regressor", None)
    start = time.perf_counter()
    fitted = BatchedGridSearchCV(est, grid, cv=cv, refit=False).fit(X, y)
    return {
        "seconds": time.perf_counter() - start,
        "stacks": fitted.n_stacks_,
        "scores": [round(float(v), 4) for v in fitted.cv_results_["mean_test_score"]],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=MODES)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.threads)))
        return
    seconds = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        for mode in MODES if repeat % 2 == 0 else MODES[::-1]:
            cmd = [sys.executable, __file__, "--one", mode, "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            seconds[mode].append(result["seconds"])
            print(mode, f"{result['seconds']:.2f} s", result["stacks"], result["scores"], flush=True)
    for mode, values in seconds.items():
        print(mode, "median", f"{statistics.median(values):.2f} s")


if __name__ == "__main__":
    main()
