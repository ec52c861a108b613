"""The digits grid search behind ``sk-softreg demo`` and examples/digits_gridsearch.py."""

import sys
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split

from ._classifier import SoftRegCNNClassifier
from .plot import sparsity_scorer

__all__ = ["DEFAULT_GRID", "run_demo", "sparsest_within_one_se"]

# lambda1 = 3e-5: about half the penalized weights exactly zero at a small
# accuracy cost in the regularization study (docs/study); 1e-4 costs more.
DEFAULT_GRID = {"lambda1": [0.0, 3e-5], "lambda2": [0.0, 1e-4], "alpha": [0.0, 0.1]}


def sparsest_within_one_se(cv_results):
    """Index of the sparsest candidate whose CV accuracy is within one standard error of the best.

    The "one-standard-error rule" (Hastie, Tibshirani & Friedman, *Elements of
    Statistical Learning*, 7.10): among the candidates whose mean CV accuracy is
    at least ``best mean - best std / sqrt(n_splits)``, take the one with the
    most exact zeros (``mean_test_sparsity``); ties go to the higher accuracy.
    Use it as ``GridSearchCV(refit=sparsest_within_one_se)`` with the scorers
    ``{"accuracy": ..., "sparsity": sparsity_scorer}``.

    Parameters
    ----------
    cv_results : dict
        ``GridSearchCV.cv_results_`` with ``mean_test_accuracy``,
        ``std_test_accuracy``, ``mean_test_sparsity`` and ``split*_test_accuracy``.

    Returns
    -------
    int
        The index of the chosen candidate.
    """
    mean = np.asarray(cv_results["mean_test_accuracy"], dtype=float)
    std = np.asarray(cv_results["std_test_accuracy"], dtype=float)
    n_splits = sum(
        1 for key in cv_results if key.startswith("split") and key.endswith("_test_accuracy")
    )
    best = int(np.argmax(mean))
    admissible = mean >= mean[best] - std[best] / np.sqrt(max(n_splits, 1))
    sparsity = np.where(admissible, np.asarray(cv_results["mean_test_sparsity"], float), -1.0)
    # most zeros first, then the higher accuracy
    order = np.lexsort((-mean, -sparsity))
    return int(order[0])


def run_demo(
    param_grid=None,
    *,
    max_epochs=None,
    cv=3,
    n_samples=None,
    n_jobs=None,
    device="auto",
    random_state=0,
    output="digits_model.joblib",
    file=None,
):
    """Grid-search λ1, λ2 and α of the default classifier on the digits data.

    Splits ``load_digits`` (scaled to [0, 1]) 75/25, stratified; runs
    ``GridSearchCV`` on the training part, recording each fit's accuracy and
    sparsity; refits the sparsest setting whose CV accuracy is within one
    standard error of the best (:func:`sparsest_within_one_se`), so the saved
    model shows what L1 buys when it costs no significant accuracy; writes the
    CV table, the test accuracy and the sparsity of the refitted model; saves
    it with joblib.

    Parameters
    ----------
    param_grid : dict or None, default=None
        ``None`` uses :data:`DEFAULT_GRID` (8 combinations).
    max_epochs : int or None, default=None
        Epochs per fit; ``None`` keeps the classifier's default.
    cv : int, default=3
        Cross-validation folds.
    n_samples : int or None, default=None
        Use only the first ``n_samples`` digits (quick runs).
    n_jobs : int or None, default=None
        Passed to ``GridSearchCV``.
    device : str, default="auto"
    random_state : int, default=0
        Seeds the split and every fit.
    output : str, path or None, default="digits_model.joblib"
        Where to save the best model; ``None`` skips saving.
    file : file-like or None, default=None
        Where the report is written; ``None`` is ``sys.stdout``.

    Returns
    -------
    dict
        ``search`` (the fitted GridSearchCV), ``test_accuracy``, ``sparsity``,
        ``seconds`` and ``output``.
    """
    out = file if file is not None else sys.stdout
    X, y = load_digits(return_X_y=True)
    if n_samples is not None:
        X, y = X[:n_samples], y[:n_samples]
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=0.25, stratify=y, random_state=random_state
    )
    params = {"random_state": random_state, "device": device}
    if max_epochs is not None:
        params["max_epochs"] = max_epochs
    grid = DEFAULT_GRID if param_grid is None else param_grid
    search = GridSearchCV(
        SoftRegCNNClassifier(**params),
        grid,
        cv=cv,
        n_jobs=n_jobs,
        scoring={"accuracy": "accuracy", "sparsity": sparsity_scorer},
        refit=sparsest_within_one_se,
    )
    start = time.perf_counter()
    search.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    best = search.best_estimator_
    accuracy = float(np.mean(best.predict(X_test) == y_test))

    names = sorted(grid)
    res = search.cv_results_
    print(f"GridSearchCV over {', '.join(names)} on digits "
          f"({len(X_train)} train / {len(X_test)} test, cv={cv}):", file=out)
    header = [*names, "mean acc", "std", "rank", "zeros", "fit s"]
    print("  ".join(f"{h:>9}" for h in header), file=out)
    chosen = search.best_index_
    for i in np.argsort(res["rank_test_accuracy"], kind="stable"):
        cells = [f"{res['param_' + n][i]:>9g}" for n in names]
        cells += [f"{res['mean_test_accuracy'][i]:>9.4f}", f"{res['std_test_accuracy'][i]:>9.4f}",
                  f"{res['rank_test_accuracy'][i]:>9d}", f"{res['mean_test_sparsity'][i]:>9.3f}",
                  f"{res['mean_fit_time'][i]:>9.2f}"]
        print("  ".join(cells) + ("  <- refit" if i == chosen else ""), file=out)
    top = int(np.argmax(res["mean_test_accuracy"]))
    print(f"most accurate in CV: {res['params'][top]} "
          f"({res['mean_test_accuracy'][top]:.4f})", file=out)
    print(f"refit (sparsest within one standard error of it): {search.best_params_}", file=out)
    print(f"test accuracy: {accuracy:.4f}", file=out)
    print(f"sparsity (exact zeros among penalized weights): {best.sparsity_:.4f}", file=out)
    print(f"search time: {seconds:.1f} s", file=out)
    if output is not None:
        import joblib

        joblib.dump(best, output)
        print(f"saved best model to {output}", file=out)
    return {"search": search, "test_accuracy": accuracy, "sparsity": best.sparsity_,
            "seconds": seconds, "output": output}
