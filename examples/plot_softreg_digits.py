"""L1 regularization path, training history and weight histogram on digits.

A small SoftRegCNNClassifier is searched over ``lambda1`` with the sparsity of
every candidate recorded by :func:`sk_softreg.plot.sparsity_scorer`; then the
best ``lambda1`` (at least 1e-3, so that zeros appear) is refit with L2 and
KL terms to show its training history and the exact zeros among its weights.
The network, epoch count and folds are small to keep the run short; the
documentation shows this script as source and does not run it.
"""

import sys

try:
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit('plot_softreg_digits.py draws figures with matplotlib: pip install -e ".[plot]"')
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from sk_softreg import SoftRegCNNClassifier
from sk_softreg.plot import (
    plot_history,
    plot_regularization_path,
    plot_weight_histogram,
    sparsity_scorer,
)

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)

small_cnn = {
    "module__channels": (8, 16),
    "module__hidden_units": 32,
    "max_epochs": 5,
    "random_state": 0,
    "device": "cpu",
}
pipe = make_pipeline(MinMaxScaler(), SoftRegCNNClassifier(**small_cnn))
search = GridSearchCV(
    pipe,
    {"softregcnnclassifier__lambda1": [0.0, 1e-4, 1e-3, 1e-2]},
    cv=2,
    scoring={"accuracy": "accuracy", "sparsity": sparsity_scorer},
    refit="accuracy",
).fit(X_train, y_train)
print("best parameters:", search.best_params_)
print(f"test accuracy: {search.score(X_test, y_test):.3f}")

best_lambda1 = search.best_params_["softregcnnclassifier__lambda1"]
clf = make_pipeline(
    MinMaxScaler(),
    SoftRegCNNClassifier(lambda1=max(best_lambda1, 1e-3), lambda2=1e-4, alpha=0.1,
                         **small_cnn),
).fit(X_train, y_train)

fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
plot_regularization_path(search, "lambda1", ax=axes[0])
plot_history(clf, ax=axes[1])
plot_weight_histogram(clf, ax=axes[2], log=True)

if __name__ == "__main__":
    fig.savefig("softreg_digits.png", dpi=80)
