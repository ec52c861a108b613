"""Grid search over lambda1, lambda2 and alpha on scikit-learn's digits.

Run::

    python examples/digits_gridsearch.py [--out digits_model.joblib] [--n-jobs 2]

It prints the grid's cross-validation table, the refitted best model's test
accuracy and weight sparsity, and saves that model with joblib.
"""

import argparse
import time

import joblib
import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from sk_softreg import SoftRegCNNClassifier

GRID = {
    "softregcnnclassifier__lambda1": [0.0, 1e-4],
    "softregcnnclassifier__lambda2": [0.0, 1e-4],
    "softregcnnclassifier__alpha": [0.0, 0.1],
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="digits_model.joblib", help="where to save the model")
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel fits (joblib)")
    parser.add_argument("--cv", type=int, default=3, help="cross-validation folds")
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the estimator's")
    args = parser.parse_args(argv)

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    clf = SoftRegCNNClassifier(random_state=0)
    if args.max_epochs:
        clf.set_params(max_epochs=args.max_epochs)
    pipe = make_pipeline(MinMaxScaler(), clf)
    search = GridSearchCV(pipe, GRID, cv=args.cv, n_jobs=args.n_jobs)

    start = time.perf_counter()
    search.fit(X_train, y_train)
    elapsed = time.perf_counter() - start

    table = pd.DataFrame(search.cv_results_)
    columns = [f"param_{name}" for name in GRID] + ["mean_test_score", "std_test_score", "rank_test_score"]
    table = table[columns].rename(columns=lambda c: c.replace("param_softregcnnclassifier__", ""))
    print(table.sort_values("rank_test_score").to_string(index=False))

    best = search.best_estimator_
    model = best[-1]
    print(f"\nbest parameters: {search.best_params_}")
    print(f"test accuracy:   {best.score(X_test, y_test):.4f}")
    print(f"weight sparsity: {model.sparsity_:.4f} (fraction of penalized weights exactly 0)")
    print(f"search time:     {elapsed:.1f} s for {len(table)} candidates x {args.cv} folds + refit")
    joblib.dump(best, args.out)
    print(f"saved:           {args.out}")
    return search


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
