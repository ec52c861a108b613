"""Row 3 (or 1a) of ``run.py`` for two commits, side by side.

On a shared machine the cost of a change of 1-2% is below the run-to-run noise
of separate benchmark runs. This script imports the package of a git revision
(``git archive`` into a temporary folder, under another name) next to the
working tree's, and interleaves short fits of both, penalties on and off, in one
process: each round runs the four fits in a rotated order, so a slow phase of
the machine hits all of them alike. It prints medians, minima and the median
of the per-round ratios, and checks that both revisions train the same weights.

``--row 1a`` interleaves instead the tabular fit of row 1a (10 epochs) of both
revisions and the hand-written fused-Adam loop, and prints the paired medians
with their 95% intervals.

Run from the repository root::

    python benchmarks/ab.py HEAD~1              # 1 torch thread, 40 rounds of 2 epochs
    python benchmarks/ab.py HEAD~1 --threads 2 --rounds 60
    python benchmarks/ab.py HEAD~1 --row 1a --threads 2 --rounds 40
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import (  # noqa: E402
    PENALTIES,
    digits_images,
    fixed_epochs,
    hand_mlp_fit,
    interleaved,
    paired_ratio,
    paired_summary,
    regression_data,
    softreg_mlp_fit,
)

from sk_softreg import SoftRegCNNClassifier  # noqa: E402

#: the name the other revision's package is imported under
OTHER = "sk_softreg_other"


def import_revision(rev, folder):
    """Import ``sk_softreg`` as of git revision ``rev`` under the name ``OTHER``."""
    archive = subprocess.run(
        ["git", "archive", rev, "sk_softreg"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    (Path(folder) / "sk_softreg").rename(Path(folder) / OTHER)
    sys.path.insert(0, folder)
    return __import__(OTHER)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the git revision to compare the working tree with")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per fit (default: 2 for row 3, 10 for row 1a)")
    parser.add_argument("--row", choices=("3", "1a"), default="3")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.row == "1a":
        return row_1a(args.rev, args.rounds, args.epochs or 10, args.threads)
    args.epochs = args.epochs or 2
    X, y = digits_images()

    def fit(cls, **params):
        est = cls(**fixed_epochs(cls, args.epochs), batch_size=64, random_state=0,
                  device="cpu", **params)
        return est.fit(X, y)

    with tempfile.TemporaryDirectory() as folder:
        other = import_revision(args.rev, folder).SoftRegCNNClassifier
        ours = SoftRegCNNClassifier
        a, b = fit(ours, **PENALTIES), fit(other, **PENALTIES)
        same = all(torch.equal(p, q) for p, q in zip(a.module_.parameters(),
                                                      b.module_.parameters()))
        print(f"same weights after a penalized fit: {same}")
        funcs = {
            "ours_on": lambda: fit(ours, **PENALTIES), "ours_off": lambda: fit(ours),
            "other_on": lambda: fit(other, **PENALTIES), "other_off": lambda: fit(other),
        }
        times = {}
        interleaved(funcs, args.rounds, record=times)

    batches = args.epochs * -(-len(X) // 64)
    print(f"{args.rounds} rounds, {args.epochs} epochs ({batches} batches) per fit, "
          f"{args.threads} torch thread(s); working tree vs {args.rev}")
    for stat in (statistics.median, min):
        t = {name: stat(ts) for name, ts in times.items()}
        for side in ("ours", "other"):
            on, off = t[f"{side}_on"], t[f"{side}_off"]
            print(f"  {stat.__name__:6s} {side:5s}: on/off {on / off:.3f}, penalties "
                  f"{1e6 * (on - off) / batches:5.0f} us per batch, off "
                  f"{1e6 * off / batches:5.0f} us per batch")
    for side in ("ours", "other"):
        print(f"  median of per-round on/off, {side}: "
              f"{paired_ratio(times, f'{side}_on', f'{side}_off'):.3f}")
    print(f"  median of per-round ours_on/other_on: "
          f"{paired_ratio(times, 'ours_on', 'other_on'):.3f}")


def row_1a(rev, rounds, epochs, n_threads):
    """Row 1a's tabular fit of the working tree and of ``rev``, and the fused hand loop."""
    X, y = regression_data(20000)
    with tempfile.TemporaryDirectory() as folder:
        other = import_revision(rev, folder).SoftRegRegressor
        softreg_mlp_fit(X[:2000], y[:2000], 1)
        softreg_mlp_fit(X[:2000], y[:2000], 1, cls=other)
        times = {}
        interleaved({
            "ours": lambda: softreg_mlp_fit(X, y, epochs),
            "other": lambda: softreg_mlp_fit(X, y, epochs, cls=other),
            "hand_fused": lambda: hand_mlp_fit(X, y, epochs, fused=True),
        }, rounds, record=times)
    print(f"{rounds} rounds of row 1a, {epochs} epochs per fit, {n_threads} torch thread(s); "
          f"working tree vs {rev}")
    for a, b in (("ours", "other"), ("ours", "hand_fused"), ("other", "hand_fused")):
        median, low, high = paired_summary(times, a, b)
        print(f"  median of per-round {a}/{b}: {median:.3f} (95% CI {low:.3f}-{high:.3f})")


if __name__ == "__main__":
    main()
