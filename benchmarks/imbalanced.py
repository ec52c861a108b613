"""class_weight on an imbalanced problem: balanced accuracy with and without "balanced".

Run from the repository root::

    python benchmarks/imbalanced.py

Data: ``make_classification(n_samples=2000, n_features=20, n_informative=5,
weights=[0.95, 0.05], flip_y=0.01, random_state=seed)``, standardized, split
75/25 stratified. The default classifier (a 1 x 20 "image") is fit with
``class_weight=None`` and ``class_weight="balanced"`` for seeds 0 .. N-1
(``--seeds N``, default 10); the script prints test accuracy, balanced
accuracy and the minority-class recall, their means, and on how many seeds
"balanced" gave the higher balanced accuracy. With about 25 minority samples
per test split, single seeds scatter by several points.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import make_classification
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sk_softreg import SoftRegCNNClassifier  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="number of seeds (0 .. N-1)")
    args = parser.parse_args(argv)
    print("| seed | class_weight | accuracy | balanced accuracy | minority recall |")
    print("|---|---|---|---|---|")
    means = {None: [], "balanced": []}
    for seed in range(args.seeds):
        X, y = make_classification(
            n_samples=2000, n_features=20, n_informative=5, weights=[0.95, 0.05],
            flip_y=0.01, random_state=seed,
        )
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)
        scaler = StandardScaler().fit(X_tr)
        X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
        for class_weight in (None, "balanced"):
            est = SoftRegCNNClassifier(class_weight=class_weight, random_state=seed, device="cpu")
            pred = est.fit(X_tr, y_tr).predict(X_te)
            row = (accuracy_score(y_te, pred), balanced_accuracy_score(y_te, pred), recall_score(y_te, pred))
            means[class_weight].append(row)
            print(f"| {seed} | {class_weight} | {row[0]:.4f} | {row[1]:.4f} | {row[2]:.4f} |", flush=True)
    for class_weight, rows in means.items():
        acc, bacc, rec = np.mean(rows, axis=0)
        print(f"| mean | {class_weight} | {acc:.4f} | {bacc:.4f} | {rec:.4f} |")
    wins = sum(b[1] > n[1] for n, b in zip(means[None], means["balanced"]))
    print(f"balanced accuracy higher with class_weight='balanced' on {wins}/{args.seeds} seeds")


if __name__ == "__main__":
    main()
