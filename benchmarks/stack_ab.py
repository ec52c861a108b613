"""A/B of two ways to train stacks, in interleaved subprocesses.

A search of ``search.py`` (``--workload``, the CNN capped at 4 epochs) under
``BatchedGridSearchCV(n_jobs=1)`` with ``--threads`` torch threads; each run is
a fresh subprocess, the two variants alternate. ``--compare`` picks the pair:

- ``alpha-stacks``: ``merged`` is the code as it is (one stack runs the KL's
  dropout-free pass for all its members; the ``alpha == 0`` ones weigh their KL
  by 0); ``split`` patches ``stack_key`` to keep the candidates whose KL needs
  that pass apart, as the code did before.
- ``narrow-backward``: ``narrow`` is the code as it is (stacked layers with
  ``4 * out <= in`` compute their weight gradient as ``grad.T @ x``);
  ``autograd`` patches them back to autograd's ``baddbmm`` backward.

Prints each run's seconds, stacks and ``mean_test_score``, then the medians and
in how many pairs the second variant was faster.

Run from the repository root::

    python benchmarks/stack_ab.py --compare alpha-stacks --threads 2 --repeats 3
    python benchmarks/stack_ab.py --compare narrow-backward --threads 1 --repeats 4
    python benchmarks/stack_ab.py --compare narrow-backward --workload cnn --threads 1
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the variants of each comparison: the old way first, then the code as it is
VARIANTS = {"alpha-stacks": ("split", "merged"), "narrow-backward": ("autograd", "narrow")}


def split_alpha_stacks():
    """Patch this process so that the KL's dropout-free pass splits the stacks."""
    import sk_softreg.model_selection as model_selection

    key = model_selection.stack_key
    model_selection.stack_key = lambda member: (*key(member), bool(member.net._kl_dropout_layers()))


def autograd_backward():
    """Patch this process so that narrow stacked layers use autograd's ``baddbmm`` backward."""
    from sk_softreg import _stacked_layers

    _stacked_layers._NarrowStackedLinear.apply = _stacked_layers._product


PATCHES = {"split": split_alpha_stacks, "autograd": autograd_backward}


def run_one(variant, workload, threads):
    sys.path[:0] = [os.path.join(ROOT, "benchmarks"), ROOT]
    import search
    import torch

    from sk_softreg import BatchedGridSearchCV

    if variant in PATCHES:
        PATCHES[variant]()
    torch.set_num_threads(threads)
    est, grid, X, y, cv, _ = search.setup(workload, 4 if workload == "cnn" else None)
    start = time.perf_counter()
    fitted = BatchedGridSearchCV(est, grid, cv=cv, refit=False).fit(X, y)
    return {
        "seconds": time.perf_counter() - start,
        "stacks": fitted.n_stacks_,
        "scores": [round(float(v), 4) for v in fitted.cv_results_["mean_test_score"]],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", choices=VARIANTS, default="narrow-backward")
    parser.add_argument("--workload", choices=("regressor", "classifier_mlp", "cnn"),
                        default="regressor")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=[v for pair in VARIANTS.values() for v in pair])
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.workload, args.threads)))
        return
    variants = VARIANTS[args.compare]
    seconds = {variant: [] for variant in variants}
    for repeat in range(args.repeats):
        for variant in variants if repeat % 2 == 0 else variants[::-1]:
            cmd = [sys.executable, __file__, "--one", variant, "--workload", args.workload,
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            seconds[variant].append(result["seconds"])
            print(variant, f"{result['seconds']:.2f} s", result["stacks"], result["scores"],
                  flush=True)
    for variant, values in seconds.items():
        print(variant, "median", f"{statistics.median(values):.2f} s")
    old, new = (seconds[v] for v in variants)
    print(f"{variants[1]} faster in {sum(b < a for a, b in zip(old, new))} of {args.repeats} pairs")


if __name__ == "__main__":
    main()
