"""Plots for fitted sk_softreg estimators and hyperparameter searches.

This module needs matplotlib, the optional extra ``[plot]``::

    pip install sk-softreg[plot]

matplotlib is imported when a plot function is called, so importing this
module (and :func:`sparsity_scorer`) works without it.

- :func:`plot_history`: the data loss and each penalty term per epoch, and
  ``valid_loss`` when the estimator has a ``train_split``.
- :func:`plot_regularization_path`: the cross-validated score with its spread
  against one hyperparameter of a fitted ``GridSearchCV`` /
  ``RandomizedSearchCV``, and the sparsity on a second axis for ``lambda1``.
- :func:`plot_weight_histogram`: the penalized weights, with the exact zeros
  that the proximal L1 step produces drawn as their own bar.
- :func:`plot_selection_path`: the inputs kept, and each input's importance,
  against ``lambda_features``.
- :func:`plot_selector_cv`: a fitted :class:`~sk_softreg.SoftRegSelectorCV`'s
  CV score (with its one-SE band) and inputs kept along its λ path.
"""

import numpy as np
from sklearn.model_selection._search import BaseSearchCV
from sklearn.utils.validation import check_is_fitted

from ._warnings import warn

__all__ = [
    "plot_history",
    "plot_regularization_path",
    "plot_selection_path",
    "plot_selector_cv",
    "plot_weight_histogram",
    "sparsity_scorer",
]

_PENALTY_TERMS = (
    ("train_l1", "lambda1", "L1 term (lambda1 * sum |w|)"),
    ("train_l2", "lambda2", "L2 term (lambda2 * sum w**2)"),
    ("train_kl", "alpha", "KL term (alpha * mean KL)"),
    ("train_features", "lambda_features", "input group term (lambda_features * sum_j ||W1[:, j]||)"),
)


def _pyplot():
    """Import matplotlib.pyplot, or raise an ImportError naming the extra."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "sk_softreg.plot requires matplotlib, which is not installed. "
            "Install the plot extra: pip install sk-softreg[plot]"
        ) from exc
    return plt


def _get_ax(ax):
    if ax is None:
        _, ax = _pyplot().subplots()
    else:
        _pyplot()
    return ax


def _final_estimator(estimator):
    """The last step of a (possibly nested) Pipeline, or the refit (``best_estimator_``)
    of a fitted search, else the estimator itself."""
    while True:
        if hasattr(estimator, "steps"):
            estimator = estimator.steps[-1][1]
        elif hasattr(estimator, "best_estimator_"):
            estimator = estimator.best_estimator_
        else:
            return estimator


def _fitted_net(estimator, function):
    """The fitted sk_softreg estimator that ``function`` plots (:func:`_final_estimator`);
    a TypeError that says what it takes for anything else."""
    from ._base import SoftRegMixin

    final = _final_estimator(estimator)
    if not isinstance(final, SoftRegMixin):
        hint = (" (a search fitted with refit=False has no best_estimator_)"
                if hasattr(estimator, "cv_results_") else "")
        raise TypeError(
            f"{function} takes a fitted SoftRegCNNClassifier or SoftRegRegressor, a Pipeline "
            f"ending in one, or a search refit on one; got {type(estimator).__name__}{hint}."
        )
    check_is_fitted(final)
    return final


def plot_history(estimator, ax=None):
    """Plot the data loss, each penalty term and the validation loss per epoch.

    The data loss is ``train_loss - train_l1 - train_l2 - train_kl``: skorch's
    ``train_loss`` holds the whole training objective. Penalty terms are drawn
    for the terms whose weight (``lambda1``, ``lambda2``, ``alpha``) is
    non-zero. ``valid_loss`` (the plain data loss on the validation split) is
    drawn when present. The y axis is logarithmic when every plotted value is
    positive, so that small penalty terms stay visible next to the data loss.

    Parameters
    ----------
    estimator : SoftRegCNNClassifier, SoftRegRegressor, Pipeline or search
        A fitted estimator, a Pipeline whose last step is one, or a fitted
        search (``GridSearchCV``, ``BatchedGridSearchCV``...) whose refit
        ``best_estimator_`` is one of these.
    ax : matplotlib Axes, default=None
        Axes to draw on; ``None`` creates a new figure.

    Returns
    -------
    ax : matplotlib Axes
        The Axes drawn on.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import make_regression
    >>> from sk_softreg import SoftRegRegressor
    >>> from sk_softreg.plot import plot_history
    >>> X, y = make_regression(n_samples=60, n_features=4, random_state=0)
    >>> reg = SoftRegRegressor(lambda2=1e-4, max_epochs=3, random_state=0,
    ...                        device="cpu").fit(X, y)
    >>> ax = plot_history(reg)
    >>> [line.get_label() for line in ax.get_lines()]
    ['data loss', 'L2 term (lambda2 * sum w**2)']
    """
    estimator = _fitted_net(estimator, "plot_history")
    ax = _get_ax(ax)
    history = estimator.history_
    epochs = np.asarray(history[:, "epoch"])
    train_loss = np.asarray(history[:, "train_loss"], dtype=float)
    data = train_loss.copy()
    curves = []
    for key, param, label in _PENALTY_TERMS:
        values = np.array([row.get(key, 0.0) for row in history], dtype=float)
        data -= values
        if getattr(estimator, param, 0):
            curves.append((values, label, "-"))
    curves.insert(0, (data, "data loss", "-"))
    if all("valid_loss" in row for row in history):
        curves.append((np.asarray(history[:, "valid_loss"], dtype=float), "valid_loss", "--"))
    for values, label, style in curves:
        ax.plot(epochs, values, style, marker="o", markersize=3, label=label)
    if all(np.all(values > 0) for values, _, _ in curves):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (per sample)")
    ax.set_title(type(estimator).__name__)
    ax.legend()
    return ax


def sparsity_scorer(estimator, X=None, y=None):
    """Scorer returning the fitted estimator's ``sparsity_``.

    Use it in a multi-metric search so that ``cv_results_`` records the
    fraction of exact zeros of every candidate and fold, which
    :func:`plot_regularization_path` draws on a second axis. It reads the
    attribute of the fitted estimator (the last step of a Pipeline); ``X`` and
    ``y`` are ignored.

    Parameters
    ----------
    estimator : estimator or Pipeline
        A fitted sk_softreg estimator, or a Pipeline ending in one.
    X : array-like, default=None
        Ignored.
    y : array-like, default=None
        Ignored.

    Returns
    -------
    sparsity : float
        Fraction of the penalized weights that are exactly zero.

    Examples
    --------
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sk_softreg import SoftRegRegressor
    >>> from sk_softreg.plot import sparsity_scorer
    >>> search = GridSearchCV(
    ...     SoftRegRegressor(device="cpu"), {"lambda1": [0.0, 1e-3]},
    ...     scoring={"r2": "r2", "sparsity": sparsity_scorer}, refit="r2")
    """
    final = _final_estimator(estimator)
    if not hasattr(final, "sparsity_"):
        raise ValueError(
            f"sparsity_scorer needs an estimator with a sparsity_ attribute after fit; "
            f"got {type(final).__name__}."
        )
    return float(final.sparsity_)


def _param_key(cv_results, param):
    keys = [
        key
        for key in cv_results
        if key == f"param_{param}" or (key.startswith("param_") and key.endswith(f"__{param}"))
    ]
    if len(keys) != 1:
        searched = sorted(key[len("param_") :] for key in cv_results if key.startswith("param_"))
        what = "No" if not keys else "More than one"
        raise ValueError(
            f"{what} searched parameter matches {param!r}; the search varied {searched}."
        )
    return keys[0]


def _score_name(search, score):
    results = search.cv_results_
    if score is not None:
        if f"mean_test_{score}" not in results:
            names = sorted(k[len("mean_test_") :] for k in results if k.startswith("mean_test_"))
            raise ValueError(f"score={score!r} is not in cv_results_; available: {names}.")
        return score
    if "mean_test_score" in results:
        return "score"
    if isinstance(search.refit, str):
        return search.refit
    raise ValueError(
        "The search has several scorers and refit is not a scorer name; pass score=<name>."
    )


def plot_regularization_path(search, param="lambda1", ax=None, score=None):
    """Plot the cross-validated score against one hyperparameter.

    The mean test score is drawn with a band of one standard deviation over
    the folds, on a logarithmic x axis. A grid containing 0 (no penalty)
    uses a ``symlog`` axis whose linear range ends at the smallest positive
    value, so 0 sits at the left edge, marked on the axis.

    When other parameters were searched too, the path is the slice through
    the best candidate: only the candidates whose other parameters equal
    those of ``search.best_index_`` (or of the best mean score when the
    search did not refit) are drawn.

    When ``param`` is ``lambda1`` and ``cv_results_`` holds a ``sparsity``
    score (use :func:`sparsity_scorer` in a scoring dict), the mean sparsity
    is drawn on a second y axis. Without it a ``UserWarning`` says how to get it.

    Parameters
    ----------
    search : GridSearchCV or RandomizedSearchCV
        A fitted search. Parameter names may carry a Pipeline prefix
        (``"clf__lambda1"`` matches ``param="lambda1"``).
    param : str, default="lambda1"
        The hyperparameter on the x axis. Its values must be non-negative
        numbers.
    ax : matplotlib Axes, default=None
        Axes to draw on; ``None`` creates a new figure.
    score : str, default=None
        Name of the score to draw with a multi-metric search. ``None`` uses the
        single score, or the scorer named by ``search.refit``.

    Returns
    -------
    ax : matplotlib Axes
        The Axes with the score; the sparsity axis, when drawn, is its twin
        (``ax.sparsity_ax``).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import make_regression
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sk_softreg import SoftRegRegressor
    >>> from sk_softreg.plot import plot_regularization_path, sparsity_scorer
    >>> X, y = make_regression(n_samples=60, n_features=4, random_state=0)
    >>> search = GridSearchCV(
    ...     SoftRegRegressor(max_epochs=2, random_state=0, device="cpu"),
    ...     {"lambda1": [0.0, 1e-3, 1e-2]}, cv=2,
    ...     scoring={"r2": "r2", "sparsity": sparsity_scorer}, refit="r2").fit(X, y)
    >>> ax = plot_regularization_path(search, "lambda1")
    >>> ax.get_xscale()
    'symlog'
    """
    if not (isinstance(search, BaseSearchCV) or hasattr(search, "cv_results_")):
        raise TypeError(
            "plot_regularization_path takes a fitted search (GridSearchCV, "
            f"BatchedGridSearchCV, ...); got {type(search).__name__}."
        )
    check_is_fitted(search, "cv_results_")
    results = search.cv_results_
    key = _param_key(results, param)
    name = _score_name(search, score)

    # candidates on the slice through the best one
    best = getattr(search, "best_index_", None)
    if best is None or not isinstance(best, (int, np.integer)):
        best = int(np.nanargmax(results[f"mean_test_{name}"]))
    others = [k for k in results if k.startswith("param_") and k != key]
    mask = np.ones(len(results["params"]), dtype=bool)
    for other in others:
        column = results[other]
        mask &= np.array([column[i] == column[best] for i in range(len(column))])

    try:
        x = np.asarray(np.ma.getdata(results[key])[mask], dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{param} must take numeric values to be plotted.") from exc
    if np.any(x < 0) or not np.all(np.isfinite(x)):
        raise ValueError(f"{param} values must be finite and non-negative; got {x.tolist()}.")
    order = np.argsort(x, kind="stable")
    x = x[order]
    mean = np.asarray(results[f"mean_test_{name}"], dtype=float)[mask][order]
    std = np.asarray(results[f"std_test_{name}"], dtype=float)[mask][order]

    ax = _get_ax(ax)
    (line,) = ax.plot(x, mean, marker="o", label=f"mean test {name}")
    ax.fill_between(x, mean - std, mean + std, alpha=0.25, color=line.get_color(),
                    label="± 1 std over folds")
    _penalty_axis(ax, x, param)
    ax.set_ylabel(f"CV {name}")

    handles, labels = ax.get_legend_handles_labels()
    ax.sparsity_ax = None
    if param == "lambda1" or key.endswith("__lambda1"):
        if "mean_test_sparsity" in results and name != "sparsity":
            sparsity = np.asarray(results["mean_test_sparsity"], dtype=float)[mask][order]
            twin = ax.twinx()
            (sline,) = twin.plot(x, sparsity, marker="s", linestyle="--", color="C3",
                                 label="sparsity (fraction of exact zeros)")
            twin.set_ylim(-0.02, 1.02)
            twin.set_ylabel("sparsity")
            handles.append(sline)
            labels.append(sline.get_label())
            ax.sparsity_ax = twin
        elif name != "sparsity":
            warn(
                "cv_results_ has no 'sparsity' score, so the sparsity axis is not drawn. "
                "Add scoring={..., 'sparsity': sk_softreg.plot.sparsity_scorer} to the search."
            )
    ax.legend(handles, labels, loc="best")
    return ax


def _penalty_axis(ax, x, param):
    """Log x axis for penalty weights; symlog with 0 at the left edge when 0 is among them."""
    positive = x[x > 0]
    if np.any(x == 0) and positive.size:
        ax.set_xscale("symlog", linthresh=float(positive.min()))
        ax.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlim(left=0.0)  # no empty negative half
    elif np.any(x == 0):
        ax.set_xscale("linear")
    else:
        ax.set_xscale("log")
    ax.set_xlabel(param if np.all(x > 0) else f"{param} (symlog axis; 0 = no penalty)")


def plot_selection_path(estimators, ax=None, highlight=None, feature_names=None):
    """Plot the feature-selection path: inputs kept against ``lambda_features``.

    Each estimator is one fit (the same data and settings, a different
    ``lambda_features``). The number of inputs kept, ``n_features_selected_``,
    is drawn on ``ax``; each input's ``feature_importances_`` (the share of
    the first layer's column norms, exactly 0 once the input is dropped) on a
    second y axis, ``ax.importance_ax``. The x axis is logarithmic (``symlog``
    when ``lambda_features=0`` is among the fits, drawn at the left edge).

    Parameters
    ----------
    estimators : sequence of estimators
        Fitted :class:`~sk_softreg.SoftRegRegressor` or
        :class:`~sk_softreg.SoftRegCNNClassifier` (or Pipelines ending in one)
        with ``feature_importances_``, e.g. the fits of a grid over
        ``lambda_features``. Their order does not matter.
    ax : matplotlib Axes, default=None
        Axes to draw on; ``None`` creates a new figure.
    highlight : sequence of int, default=None
        Inputs whose importance path gets its own colour and legend entry
        (e.g. the truly informative ones); the others are drawn thin and grey.
    feature_names : sequence of str, default=None
        Names for the legend; default ``feature_names_in_`` when fitted on a
        DataFrame, else ``x0``, ``x1``, ...

    Returns
    -------
    ax : matplotlib Axes
        The Axes with the count of inputs kept; the importance axis is its
        twin, ``ax.importance_ax``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import make_regression
    >>> from sk_softreg import SoftRegRegressor
    >>> from sk_softreg.plot import plot_selection_path
    >>> X, y = make_regression(n_samples=60, n_features=4, random_state=0)
    >>> fits = [SoftRegRegressor(lambda_features=lf, max_epochs=3, random_state=0,
    ...                          device="cpu").fit(X, y) for lf in (0.0, 0.1)]
    >>> ax = plot_selection_path(fits, highlight=[0])
    >>> ax.get_ylabel()
    'inputs kept'
    """
    if hasattr(estimators, "fit"):
        raise TypeError(
            "plot_selection_path takes a sequence of fitted estimators (the fits of a path "
            f"over lambda_features); got one {type(estimators).__name__}: pass [estimator]."
        )
    finals = [_final_estimator(est) for est in estimators]
    if not finals:
        raise ValueError("plot_selection_path needs at least one fitted estimator.")
    for est in finals:
        check_is_fitted(est)
        if not hasattr(est, "feature_importances_"):
            raise ValueError(
                f"{type(est).__name__} has no feature_importances_: its module's first layer "
                "is not an nn.Linear taking the input features."
            )
    widths = {len(est.feature_importances_) for est in finals}
    if len(widths) > 1:
        raise ValueError(
            f"plot_selection_path takes fits on the same inputs; these have {sorted(widths)} "
            "input features."
        )
    x = np.array([float(est.lambda_features) for est in finals])
    order = np.argsort(x, kind="stable")
    x = x[order]
    kept = np.array([finals[i].n_features_selected_ for i in order])
    importances = np.array([finals[i].feature_importances_ for i in order])
    n_features = importances.shape[1]
    if feature_names is None:
        feature_names = getattr(finals[0], "feature_names_in_", None)
    if feature_names is None:
        feature_names = [f"x{j}" for j in range(n_features)]
    highlight = [] if highlight is None else [int(j) for j in highlight]
    outside = [j for j in highlight if not -n_features <= j < n_features]
    if outside:
        raise ValueError(
            f"highlight names inputs {outside}, but the fits have {n_features} inputs "
            f"(0 to {n_features - 1})."
        )

    ax = _get_ax(ax)
    twin = ax.twinx()
    for j in range(n_features):
        if j not in highlight:
            twin.plot(x, importances[:, j], color="0.7", linewidth=0.8, zorder=1)
    lines = []
    for k, j in enumerate(highlight):
        (line,) = twin.plot(x, importances[:, j], color=f"C{(k + 1) % 10}", linewidth=1.5,
                            label=f"importance of {feature_names[j]}")
        lines.append(line)
    twin.set_ylabel("feature_importances_ (grey: other inputs)")
    twin.set_ylim(bottom=0)
    (count,) = ax.plot(x, kept, color="C0", marker="o", linewidth=2.5, zorder=3,
                       label="inputs kept (n_features_selected_)")
    ax.set_ylim(0, n_features + 0.5)
    ax.set_ylabel("inputs kept")
    _penalty_axis(ax, x, "lambda_features")
    ax.set_zorder(twin.get_zorder() + 1)  # the count on top of the importance lines
    ax.patch.set_visible(False)
    ax.legend([count, *lines], [h.get_label() for h in (count, *lines)], loc="best",
              fontsize="small")
    ax.importance_ax = twin
    return ax


def plot_selector_cv(selector, ax=None):
    """Plot a fitted :class:`~sk_softreg.SoftRegSelectorCV`: CV score and inputs kept against λ.

    The mean held-out score per λ (``cv_scores_``, the scores λ is chosen
    on) is drawn on ``ax`` with a band of one standard error (the folds'
    standard deviation over the square root of their number), the best
    mean's one-SE threshold as a dotted line, and the chosen λ
    (``best_lambda_``) as a vertical line. With ``relaxed=True``, the
    penalized path model's mean score (``cv_path_scores_``) is drawn too,
    dashed. The inputs kept along
    the path over all rows (``n_features_path_``) are on a second y axis,
    ``ax.count_ax``. The x axis is logarithmic.

    Parameters
    ----------
    selector : SoftRegSelectorCV or Pipeline ending in one
        Fitted.
    ax : matplotlib Axes, default=None
        Axes to draw on; ``None`` creates a new figure.

    Returns
    -------
    ax : matplotlib Axes
        The Axes with the score; the count is on its twin, ``ax.count_ax``.
    """
    from .feature_selection import SoftRegSelectorCV

    final = _final_estimator(selector)
    if not isinstance(final, SoftRegSelectorCV):
        raise TypeError(
            "plot_selector_cv takes a fitted SoftRegSelectorCV or a Pipeline ending in one; "
            f"got {type(selector).__name__}."
        )
    selector = final
    check_is_fitted(selector, "cv_scores_")
    x = selector.lambdas_
    scores = selector.cv_scores_
    mean = np.nanmean(scores, axis=1)
    n_folds = scores.shape[1]
    se = (np.nanstd(scores, axis=1, ddof=1) / np.sqrt(n_folds) if n_folds > 1
          else np.zeros_like(mean))
    best = int(np.nanargmax(mean))
    ax = _get_ax(ax)
    relaxed = getattr(selector, "relaxed", False) and hasattr(selector, "cv_path_scores_")
    (line,) = ax.plot(x, mean, color="C0", marker="o",
                      label="mean CV score (relaxed refits)" if relaxed else "mean CV score")
    if relaxed:
        ax.plot(x, np.nanmean(selector.cv_path_scores_, axis=1), color="C7", linestyle="--",
                marker=".", label="mean CV score (penalized path)")
    ax.fill_between(x, mean - se, mean + se, color="C0", alpha=0.2, label="± 1 SE")
    ax.axhline(mean[best] - se[best], color="C0", linestyle=":", linewidth=1,
               label="best - 1 SE")
    ax.axvline(selector.best_lambda_, color="k", linewidth=1,
               label=f"chosen λ = {selector.best_lambda_:.3g} ({selector.selection})")
    ax.set_xscale("log")
    ax.set_xlabel("lambda_features")
    ax.set_ylabel("held-out score")
    twin = ax.twinx()
    twin.step(x, selector.n_features_path_, where="mid", color="C3", label="inputs kept")
    twin.set_ylabel("inputs kept (path on all rows)")
    twin.set_ylim(0, selector.n_features_in_ + 0.5)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="best", fontsize="small")
    ax.count_ax = twin
    return ax


def plot_weight_histogram(estimator, ax=None, bins=50, log=False):
    """Histogram of the penalized weights, with the exact zeros as their own bar.

    The non-zero penalized weights (those selected by the estimator's
    ``penalize``, and counted by ``sparsity_``) fill the histogram; the exact
    zeros, produced by the proximal L1 step, are drawn as a separate bar at 0
    whose label gives their count and fraction (which equals ``sparsity_``).

    Parameters
    ----------
    estimator : SoftRegCNNClassifier, SoftRegRegressor, Pipeline or search
        A fitted estimator, a Pipeline whose last step is one, or a fitted
        search (``GridSearchCV``, ``BatchedGridSearchCV``...) whose refit
        ``best_estimator_`` is one of these.
    ax : matplotlib Axes, default=None
        Axes to draw on; ``None`` creates a new figure.
    bins : int, default=50
        Number of bins for the non-zero weights.
    log : bool, default=False
        Logarithmic count axis (useful when the zeros dominate).

    Returns
    -------
    ax : matplotlib Axes
        The Axes drawn on.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import make_regression
    >>> from sk_softreg import SoftRegRegressor
    >>> from sk_softreg.plot import plot_weight_histogram
    >>> X, y = make_regression(n_samples=60, n_features=4, random_state=0)
    >>> reg = SoftRegRegressor(lambda1=1e-2, max_epochs=3, random_state=0,
    ...                        device="cpu").fit(X, y)
    >>> ax = plot_weight_histogram(reg)
    >>> ax.get_xlabel()
    'weight value'
    """
    estimator = _fitted_net(estimator, "plot_weight_histogram")
    params = estimator._sparsity_params()
    if not params:
        raise ValueError("The estimator has no penalized weights to plot.")
    weights = np.concatenate([p.detach().cpu().numpy().ravel() for p in params])
    zero = weights == 0
    n_zero = int(zero.sum())
    nonzero = weights[~zero]

    ax = _get_ax(ax)
    if nonzero.size:
        _, edges, _ = ax.hist(nonzero, bins=bins, color="C0", label="non-zero weights", log=log)
        width = float(edges[1] - edges[0])
    else:
        width = 1.0
    ax.bar([0.0], [n_zero], width=width, color="C3", log=log,
           label=f"exact zeros: {n_zero} of {weights.size} ({n_zero / weights.size:.1%})")
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    ax.set_title(f"{type(estimator).__name__}: penalized weights")
    ax.legend()
    return ax
