"""Selecting inputs with a λ path: :class:`SoftRegSelectorCV`.

A warm-started path over ``lambda_features`` (the group-L1 penalty on the
first layer's columns, :mod:`sk_softreg._features`), run on each CV fold and
on the whole data, chosen by CV (best score or one standard error), then a
refit on the kept inputs without the penalty.
"""

import copy
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, _fit_context, clone, is_classifier
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.feature_selection import SelectorMixin
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted, validate_data

from ._warnings import warn
from .modules import GaussianMLP

__all__ = ["SoftRegSelectorCV"]

# the path's batch size under path_params="auto" (with batch_size="auto")
_PATH_BATCH_SIZE = 2048
# lambda_max="auto": the grid of lambda_max=_AUTO_LAMBDA_MAX, then continued past it
_AUTO_LAMBDA_MAX = 0.3
_AUTO_STEP = 1.5  # the step ratio of a one-λ grid


def _path_settings(estimator, path_params):
    """The parameters the path's fits use on top of ``estimator``'s own."""
    if path_params is not None and not isinstance(path_params, str):
        return dict(path_params)
    # "auto": no early stopping (it ends a fit before the zeros settle, and it
    # restores an early epoch), and no dropout in the default MLP (its noise
    # enters every column's gradient and keeps noise inputs off zero)
    # and batches of 2,048 rows: a column at zero stays there only while
    # its mini-batch gradient is small against λ, and a noise input's gradient is
    # sampling noise that shrinks with the batch
    settings = {"early_stopping": False}
    params = estimator.get_params(deep=False)
    if params.get("batch_size") == "auto":
        settings["batch_size"] = _PATH_BATCH_SIZE
    if params.get("module") in (None, GaussianMLP) and not is_classifier(estimator):
        settings["module__dropout"] = 0.0
    return settings


def _input_norms(est):
    """Column norms of the fitted estimator's input layer, shape (n_features,)."""
    weight = est._feature_weight().detach()
    return weight.norm(dim=0).cpu().double().numpy()


def _run_path(estimator, X, y, lambdas, dense_epochs, path_epochs, X_val=None, y_val=None,
              scorer=None, keep=None, max_extra=0):
    """A dense fit, then one warm-started fit of ``path_epochs`` epochs per λ.

    With ``max_extra > 0`` the path goes on past ``lambdas[-1]`` by the grid's
    step ratio until at most one input is left (at most ``max_extra`` more λ
    values). Returns the λ values run, the column norms after each
    (n_lambdas, n_features), the validation score after each (or None), and
    a copy of the estimator at the λ of index ``keep`` (or None).
    """
    est = clone(estimator).set_params(lambda_features=0.0, max_epochs=dense_epochs)
    est.fit(X, y)
    est.set_params(warm_start=True, max_epochs=path_epochs)
    step = lambdas[-1] / lambdas[-2] if len(lambdas) > 1 else _AUTO_STEP
    lambdas, norms, scores, kept = list(lambdas), [], [], None
    i = 0
    while i < len(lambdas):
        est.set_params(lambda_features=float(lambdas[i]))
        with warnings.catch_warnings():
            # "set the weights of every input to zero": expected at the path's end
            warnings.simplefilter("ignore", UserWarning)
            est.fit(X, y)
        norms.append(_input_norms(est))
        if scorer is not None:
            scores.append(scorer(est, X_val, y_val))
        if keep is not None and i == keep:
            kept = copy.deepcopy(est)
        if i == len(lambdas) - 1 and max_extra > 0 and np.count_nonzero(norms[-1]) > 1:
            lambdas.append(lambdas[-1] * step)
            max_extra -= 1
        i += 1
    return (np.array(lambdas), np.array(norms), np.array(scores) if scorer is not None else None,
            kept)


def _relaxed_score(estimator, X, y, train, test, support, scorer):
    """The held-out score of ``estimator`` refit on the inputs ``support`` of the train rows."""
    if not support.any():
        # no input left: the best constant (the mean, or the class prior)
        dummy = DummyClassifier(strategy="prior") if is_classifier(estimator) else DummyRegressor()
        return scorer(dummy.fit(X[train], y[train]), X[test], y[test])
    est = clone(estimator).set_params(lambda_features=0.0)
    est.fit(X[train][:, support], y[train])
    return scorer(est, X[test][:, support], y[test])


def _relaxed_scores(estimator, X, y, folds, fold_norms, scorer, n_jobs):
    """``(n_lambdas, n_folds)`` scores of refits on each fold's kept inputs after each λ.

    One refit per distinct support per fold: the λ values that keep the same inputs
    on a fold share its score. Returns the scores and the number of refits.
    """
    jobs = {}  # (fold, support bytes) -> (support, [λ indices])
    for i in range(len(folds)):
        for k in range(fold_norms.shape[0]):
            support = fold_norms[k, i] > 0
            jobs.setdefault((i, support.tobytes()), (support, []))[1].append(k)
    keys = list(jobs)
    out = Parallel(n_jobs=n_jobs)(
        delayed(_relaxed_score)(estimator, X, y, *folds[i], jobs[(i, b)][0], scorer)
        for i, b in keys
    )
    scores = np.full(fold_norms.shape[:2], np.nan)
    for (i, b), score in zip(keys, out):
        scores[jobs[(i, b)][1], i] = score
    return scores, len(keys)


def _fold_path(estimator, X, y, train, test, lambdas, dense_epochs, path_epochs, scorer):
    _, norms, scores, _ = _run_path(
        estimator, X[train], y[train], lambdas, dense_epochs, path_epochs,
        X_val=X[test], y_val=y[test], scorer=scorer,
    )
    return norms, scores


def _stacked_paths(path_est, X, y, splits, lambdas, dense_epochs, path_epochs, scorer):
    """Every path of ``splits`` (``(train, test or None)`` pairs) trained as one stack.

    Returns ``(norms, scores)`` of shapes ``(n_lambdas, n_paths, n_features)`` and
    ``(n_lambdas, n_paths)`` (NaN where ``test`` is None), or None with the
    reason where the paths cannot share a stack.
    """
    from ._stacked import train_path
    from ._stacked_members import prepare_member, stack_key

    total = dense_epochs + len(lambdas) * path_epochs
    members = []
    for train, _ in splits:
        net = clone(path_est).set_params(lambda_features=float(lambdas[0]), max_epochs=total)
        members.append(prepare_member(net, X[train], y[train]))
    reasons = {m.reason for m in members if m.reason is not None}
    if reasons:
        return None, "; ".join(sorted(reasons))
    if any(m.valid is not None for m in members):
        return None, "a validation split (train_split) in the path's fits"
    keys = [stack_key(m) for m in members]
    if any(k != keys[0] for k in keys[1:]):
        return None, "the folds' fits differ in what a stack must share"
    norms = np.zeros((len(lambdas), len(splits), X.shape[1]))
    scores = np.full((len(lambdas), len(splits)), np.nan)

    def after_step(k, i, member):
        if member.error is not None:
            raise member.error
        norms[k, i] = _input_norms(member.net)
        test = splits[i][1]
        if test is not None:
            scores[k, i] = scorer(member.net, X[test], y[test])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "every input to zero": the path's end
        train_path(members, lambdas, dense_epochs, path_epochs, after_step)
    return (norms, scores), None


def _estimator_has(attr):
    def check(self):
        return hasattr(self.estimator_ if hasattr(self, "estimator_") else self._estimator(), attr)

    return check


class SoftRegSelectorCV(SelectorMixin, MetaEstimatorMixin, BaseEstimator):
    """Select inputs by a warm-started ``lambda_features`` path chosen by cross-validation.

    On each CV fold, and then on all the rows, the estimator is first fitted
    densely (``lambda_features=0``) and then along an increasing grid of
    ``lambda_features``: each λ starts from the previous λ's weights and
    trains ``path_epochs`` more epochs (``warm_start=True``), as in glmnet and
    LassoNet. After each λ, the held-out fold is scored by ``estimator``
    refit with ``lambda_features=0`` on the inputs the fold's path keeps
    (``relaxed=True``, Meinshausen's relaxed lasso; one refit per distinct
    set of inputs per fold), or by the penalized path model itself
    (``relaxed=False``). The chosen λ is the one with the best mean score
    (``selection="best"``) or the largest λ whose mean score is within one
    standard error of the best (``selection="1se"``). The inputs kept are
    those with a non-zero column at the chosen λ on the path over all the
    rows, and the final model (``estimator_``) is ``estimator`` refit on
    them with ``lambda_features=0``.

    Parameters
    ----------
    estimator : estimator, default=None
        An sk_softreg estimator with a ``lambda_features`` parameter and a
        module whose first layer is an ``nn.Linear`` taking every input.
        ``None`` uses ``SoftRegRegressor()``. Standardize X first.
    lambdas : array-like of float, default=None
        The path's ``lambda_features`` values (sorted increasingly). ``None``:
        ``n_lambdas`` values spaced evenly on a log scale from
        ``lambda_max * lambda_min_ratio`` to ``lambda_max``.
    n_lambdas : int, default=16
        Number of λ values when ``lambdas`` is None.
    lambda_max : float or "auto", default=0.3
        Largest λ when ``lambdas`` is None. ``lambda_features`` is in units of
        the standardized target's half squared error, so one value suits
        most standardized problems. ``"auto"``: the path on all the rows runs
        first, on the grid of ``lambda_max=0.3``, and goes on past 0.3 with
        the same ratio between steps until at most one input is left (at most
        ``n_lambdas`` more values); the grid then starts at the λ before the
        first input leaves that path (earlier values are dropped), and the
        folds run on that grid. ``lambdas_`` holds it.
    lambda_min_ratio : float, default=0.01
        Smallest λ over the largest, when ``lambdas`` is None (over 0.3 with
        ``lambda_max="auto"``).
    cv : int, cross-validation generator or iterable, default=5
        As in :func:`sklearn.model_selection.check_cv`.
    scoring : str or callable, default=None
        Scores the held-out fold after each λ (greater is better). ``None``:
        the estimator's ``score`` (R² for a regressor).
    selection : {"1se", "best"}, default="1se"
        How λ is chosen from the mean CV scores (``cv_scores_``).
    relaxed : bool, default=True
        Choose λ on relaxed scores (Meinshausen's relaxed lasso): each fold's
        score at each λ is that of ``estimator`` refit with
        ``lambda_features=0`` on the inputs the fold's path keeps at that λ,
        so that the penalty's shrinkage does not decide the choice. One refit
        per distinct set of inputs per fold (``n_relaxed_fits_``); a fold
        with no input left scores the constant model (``DummyRegressor``, or
        ``DummyClassifier(strategy="prior")``). ``False``: the penalized path
        model's held-out score: cheaper (no refits), but on a real table
        with 20 permuted copies of its columns it chose the smallest λ and
        kept 13 or 14 of them, where the relaxed scores kept 0 to 2 (see
        the docs page "Selecting inputs with a λ path").
    refit : bool, default=True
        Refit ``estimator`` on the kept inputs with ``lambda_features=0``.
        ``False`` keeps the penalized model of the path at the chosen λ
        (it takes every input; the dropped ones have zero weights).
    dense_epochs : int, default=100
        Epochs of the dense fit that starts each path.
    path_epochs : int, default=10
        Epochs per λ along the path.
    path_params : dict or "auto", default="auto"
        Parameters set on the path's fits (not on the refit). ``"auto"``:
        ``early_stopping=False``; ``batch_size=2048`` where the estimator's
        is ``"auto"``; and ``module__dropout=0`` for ``SoftRegRegressor``'s
        default module. See the docs page "Selecting inputs with a λ path"
        for why.
    n_jobs : int, default=None
        Paths run in parallel (joblib) where they are not stacked.
    stacked : bool, default=False
        Train the folds' paths and the path on all rows together, as one
        stacked model (the engine of :class:`~sk_softreg.BatchedGridSearchCV`).
        Where the estimator cannot be stacked (see there), the paths are
        trained one by one with a ``StackingFallbackWarning``. Experimental:
        on a 2-core CPU it was slower than ``n_jobs=2`` (see the docs page).

    Attributes
    ----------
    lambdas_ : ndarray of shape (n_lambdas,)
        The path's λ values (with ``lambda_max="auto"``, as many as that rule
        gave).
    cv_scores_ : ndarray of shape (n_lambdas, n_folds)
        The held-out scores λ is chosen on: ``cv_path_scores_``, or with
        ``relaxed=True`` the relaxed refits' scores.
    cv_path_scores_ : ndarray of shape (n_lambdas, n_folds)
        Held-out score of the penalized path model after each λ on each fold.
    n_relaxed_fits_ : int
        With ``relaxed=True``: the number of refits the relaxed scores took.
    n_features_path_ : ndarray of shape (n_lambdas,)
        Inputs kept after each λ on the path over all the rows.
    cv_n_features_ : ndarray of shape (n_lambdas, n_folds)
        Inputs kept after each λ on each fold's path.
    best_index_ : int
        Index of the chosen λ.
    best_lambda_ : float
        The chosen λ.
    support_ : ndarray of bool of shape (n_features,)
        The kept inputs.
    feature_importances_ : ndarray of shape (n_features,)
        The λ at which each input leaves the path over all the rows (the
        first λ from which its column stays zero); ``inf`` for inputs that
        never leave.
    estimator_ : estimator
        The refit estimator (on the kept inputs), or with ``refit=False`` the
        penalized path model at ``best_lambda_``.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features,)
        Where X has string column names.

    Examples
    --------
    >>> from sklearn.datasets import make_friedman1
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sk_softreg import SoftRegRegressor, SoftRegSelectorCV
    >>> X, y = make_friedman1(300, n_features=8, random_state=0)
    >>> X = StandardScaler().fit_transform(X)
    >>> sel = SoftRegSelectorCV(SoftRegRegressor(max_epochs=20, random_state=0),
    ...                         n_lambdas=4, cv=2, dense_epochs=20, path_epochs=2)
    >>> sel.fit(X, y).transform(X).shape[0]
    300
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "set_params"]), None],
        "lambdas": ["array-like", None],
        "n_lambdas": [Interval(Integral, 1, None, closed="left")],
        "lambda_max": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "lambda_min_ratio": [Interval(Real, 0, 1, closed="right")],
        "cv": ["cv_object"],
        "scoring": [str, callable, None],
        "selection": [StrOptions({"1se", "best"})],
        "relaxed": ["boolean"],
        "refit": ["boolean"],
        "dense_epochs": [Interval(Integral, 1, None, closed="left")],
        "path_epochs": [Interval(Integral, 1, None, closed="left")],
        "path_params": [dict, StrOptions({"auto"})],
        "n_jobs": [Integral, None],
        "stacked": ["boolean"],
    }

    def __init__(
        self,
        estimator=None,
        *,
        lambdas=None,
        n_lambdas=16,
        lambda_max=0.3,
        lambda_min_ratio=0.01,
        cv=5,
        scoring=None,
        selection="1se",
        relaxed=True,
        refit=True,
        dense_epochs=100,
        path_epochs=10,
        path_params="auto",
        n_jobs=None,
        stacked=False,
    ):
        self.estimator = estimator
        self.lambdas = lambdas
        self.n_lambdas = n_lambdas
        self.lambda_max = lambda_max
        self.lambda_min_ratio = lambda_min_ratio
        self.cv = cv
        self.scoring = scoring
        self.selection = selection
        self.relaxed = relaxed
        self.refit = refit
        self.dense_epochs = dense_epochs
        self.path_epochs = path_epochs
        self.path_params = path_params
        self.n_jobs = n_jobs
        self.stacked = stacked

    def _estimator(self):
        if self.estimator is None:
            from ._regressor import SoftRegRegressor

            return SoftRegRegressor()
        return self.estimator

    def _auto_range(self):
        return self.lambdas is None and isinstance(self.lambda_max, str)

    def _lambda_grid(self):
        if self.lambdas is None:
            lambda_max = _AUTO_LAMBDA_MAX if self._auto_range() else self.lambda_max
            if self.n_lambdas == 1:  # lambda_max itself, as LassoCV's one-alpha grid
                return np.array([float(lambda_max)])
            return np.geomspace(lambda_max * self.lambda_min_ratio, lambda_max, self.n_lambdas)
        lambdas = np.asarray(self.lambdas, dtype=np.float64)
        if lambdas.ndim != 1 or lambdas.size == 0:
            raise ValueError(
                f"lambdas must be a non-empty 1-D array-like; got shape {lambdas.shape}."
            )
        if not np.all(np.isfinite(lambdas)) or np.any(lambdas <= 0):
            raise ValueError(f"lambdas must be finite and > 0; got {self.lambdas!r}.")
        return np.sort(lambdas)

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Run the λ path on each fold and on all rows, choose λ, and refit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs, standardized.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.

        Returns
        -------
        self
        """
        estimator = self._estimator()
        if "lambda_features" not in estimator.get_params(deep=False):
            raise ValueError(
                f"estimator must have a lambda_features parameter (an sk_softreg estimator); "
                f"got {type(estimator).__name__}."
            )
        X, y = validate_data(self, X, y, dtype=np.float32, multi_output=True,
                             y_numeric=not is_classifier(estimator))
        lambdas = self._lambda_grid()
        path_est = clone(estimator).set_params(**_path_settings(estimator, self.path_params))
        scorer = check_scoring(estimator, scoring=self.scoring)
        cv = check_cv(self.cv, y, classifier=is_classifier(estimator))
        folds = list(cv.split(X, y))
        norms = None
        if self._auto_range():
            # the path on all rows first: it fixes the grid the folds run on
            lambdas, norms, _, _ = _run_path(path_est, X, y, lambdas, self.dense_epochs,
                                             self.path_epochs, max_extra=len(lambdas))
            # and starts at the λ before the first input leaves
            dropped = np.flatnonzero(np.count_nonzero(norms, axis=1) < X.shape[1])
            start = max(int(dropped[0]) - 1, 0) if dropped.size else 0
            lambdas, norms = lambdas[start:], norms[start:]
        splits = [*folds] if norms is not None else [*folds, (np.arange(len(X)), None)]
        n_folds = len(folds)
        result, reason = None, None
        if self.stacked:
            result, reason = _stacked_paths(path_est, X, y, splits, lambdas, self.dense_epochs,
                                            self.path_epochs, scorer)
            if result is None:
                from .model_selection import StackingFallbackWarning

                warn(f"The paths are trained one by one, not stacked: {reason}.",
                     StackingFallbackWarning)
        if result is not None:
            all_norms, all_scores = result
            fold_norms, path_scores = all_norms[:, :n_folds], all_scores[:, :n_folds]
            if norms is None:
                norms = all_norms[:, -1]
        else:
            out = Parallel(n_jobs=self.n_jobs)(
                delayed(_fold_path)(path_est, X, y, train, test, lambdas, self.dense_epochs,
                                    self.path_epochs, scorer)
                for train, test in folds
            )
            fold_norms = np.stack([n for n, _ in out], axis=1)
            path_scores = np.stack([scores for _, scores in out], axis=1)
        self.cv_n_features_ = np.count_nonzero(fold_norms, axis=2)
        self.cv_path_scores_ = path_scores
        if self.relaxed:
            self.cv_scores_, self.n_relaxed_fits_ = _relaxed_scores(
                estimator, X, y, folds, fold_norms, scorer, self.n_jobs)
        else:
            self.cv_scores_ = path_scores
        self.lambdas_ = lambdas
        self.best_index_ = self._choose(self.cv_scores_)
        self.best_lambda_ = float(lambdas[self.best_index_])
        penalized = None
        if norms is None or not self.refit:
            # the path on all rows (again, with refit=False, to keep its model at best_lambda_)
            _, norms, _, penalized = _run_path(
                path_est, X, y, lambdas, self.dense_epochs, self.path_epochs,
                keep=None if self.refit else self.best_index_,
            )
        self.n_features_path_ = np.count_nonzero(norms, axis=1)
        self.support_ = norms[self.best_index_] > 0
        self.feature_importances_ = self._leaving_lambdas(norms, lambdas)
        if self.refit:
            if not self.support_.any():
                raise ValueError(
                    f"No input is left at the chosen lambda_features={self.best_lambda_!r}: "
                    "use smaller lambdas."
                )
            self.estimator_ = clone(estimator).set_params(lambda_features=0.0)
            self.estimator_.fit(X[:, self.support_], y)
        else:
            self.estimator_ = penalized
        return self

    def _choose(self, scores):
        """Index of the chosen λ from the (n_lambdas, n_folds) scores."""
        mean = np.nanmean(scores, axis=1)
        best = int(np.nanargmax(mean))
        if self.selection == "best":
            return best
        n_folds = scores.shape[1]
        se = np.nanstd(scores[best], ddof=1) / np.sqrt(n_folds) if n_folds > 1 else 0.0
        within = np.flatnonzero(mean >= mean[best] - se)
        return int(within.max())

    @staticmethod
    def _leaving_lambdas(norms, lambdas):
        """The first λ from which each input's column stays zero (inf if never)."""
        out = np.full(norms.shape[1], np.inf)
        nonzero = norms > 0
        for j in range(norms.shape[1]):
            alive = np.flatnonzero(nonzero[:, j])
            last = alive.max() if alive.size else -1
            if last + 1 < len(lambdas):
                out[j] = lambdas[last + 1]
        return out

    def _get_support_mask(self):
        check_is_fitted(self, "support_")
        return self.support_

    def _model_input(self, X):
        return self.transform(X) if self.refit else validate_data(
            self, X, reset=False, dtype=np.float32)

    @available_if(_estimator_has("predict"))
    def predict(self, X):
        """Predict with ``estimator_`` on the kept inputs of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray
        """
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(self._model_input(X))

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities of ``estimator_`` on the kept inputs of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(self._model_input(X))

    def score(self, X, y):
        """``estimator_``'s ``score`` on the kept inputs of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like

        Returns
        -------
        float
        """
        check_is_fitted(self, "estimator_")
        return self.estimator_.score(self._model_input(X), y)

    @property
    def classes_(self):
        """The classes of ``estimator_`` (classifiers)."""
        return self.estimator_.classes_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        sub = self._estimator().__sklearn_tags__()
        tags.estimator_type = sub.estimator_type
        tags.target_tags.required = True
        return tags
