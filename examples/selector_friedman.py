"""SoftRegSelectorCV on friedman1 with 50 inputs: the figure of docs/selecting_inputs.rst.

Run from the repository root::

    python examples/selector_friedman.py --out docs/selecting_inputs

``make_friedman1(3000, n_features=50, noise=1.0, random_state=0)``, 75/25 split,
standardized; ``SoftRegSelectorCV(SoftRegRegressor(random_state=0), n_jobs=2)``;
writes ``selector_cv.png`` (:func:`sk_softreg.plot.plot_selector_cv`).
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.datasets import make_friedman1  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sk_softreg import SoftRegRegressor, SoftRegSelectorCV  # noqa: E402
from sk_softreg.plot import plot_selector_cv  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/selecting_inputs")
    args = parser.parse_args()
    X, y = make_friedman1(3000, n_features=50, noise=1.0, random_state=0)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(Xtr)
    sel = SoftRegSelectorCV(SoftRegRegressor(random_state=0), n_jobs=2)
    sel.fit(scaler.transform(Xtr), ytr)
    fig, ax = plt.subplots(figsize=(7, 4))
    plot_selector_cv(sel, ax=ax)
    ax.set_title(f"kept {sel.support_.sum()} inputs; test R² of the refit "
                 f"{sel.score(scaler.transform(Xte), yte):.3f}")
    os.makedirs(args.out, exist_ok=True)
    fig.savefig(os.path.join(args.out, "selector_cv.png"), dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
