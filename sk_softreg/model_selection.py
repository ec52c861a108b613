"""Tuning in one pass: a grid search that trains a penalty grid as stacked models.

:class:`BatchedGridSearchCV` is scikit-learn's ``GridSearchCV`` (same
parameters, same ``cv_results_``, refit, scoring and delegation) whose
candidate × fold fits are trained together where they can be: the fits whose
parameters differ only in :data:`~sk_softreg._stacked_members.STACKABLE_PARAMS`
(``lambda1``, ``lambda2``, ``alpha``, ``lambda_features``, ``tau``,
``class_weight``, ``random_state``) share one network run per step
(:mod:`sk_softreg._stacked`). Every fit is still scored as one fitted
sk_softreg estimator, by the search's own scorers.
"""

import math
import time
from collections import defaultdict
from contextlib import contextmanager
from numbers import Integral

import numpy as np
from joblib import effective_n_jobs, logger
from sklearn.base import _fit_context, clone, is_classifier
from sklearn.model_selection import GridSearchCV, ParameterGrid
from sklearn.model_selection._split import check_cv
from sklearn.model_selection._validation import (
    _fit_and_score,
    _insert_error_scores,
    _warn_or_raise_about_fit_failures,
)
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import _safe_split
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import _check_method_params, indexable

from ._base import SoftRegMixin
from ._stacked import train_stack
from ._stacked_members import STACKABLE_PARAMS, Member, prepare_member, stack_key
from ._warnings import warn

__all__ = ["BatchedGridSearchCV", "StackingFallbackWarning"]


class StackingFallbackWarning(UserWarning):
    """Some fits of a :class:`BatchedGridSearchCV` were trained one by one, not stacked."""


class BatchedGridSearchCV(GridSearchCV):
    """``GridSearchCV`` that trains the fits of a penalty grid as stacked models.

    It takes the parameters of :class:`sklearn.model_selection.GridSearchCV`
    and gives its attributes: swap the class name and nothing else. The fits
    of candidates that differ only in ``lambda1``, ``lambda2``, ``alpha``,
    ``lambda_features``, ``tau``, ``class_weight`` or ``random_state``, on
    all folds, are trained together as one model with a leading model axis.
    Each such fit (a *member*) is set up by its own estimator as its ``fit``
    would be (its initialization from its ``random_state``, its rows, its
    sample and class weights, its early-stopping split, its batch order), is
    trained with its own penalties, stops early on its own, and is then an
    ordinary fitted estimator (``module_``, ``history_``, ``sparsity_``,
    ``n_iter_``, ``best_epoch_``, ...) when the scorers see it. With dropout
    0 and a ``random_state``, its predictions equal the independent fit's to
    float rounding (see the docs for how far, and for convolutions).

    Fits that differ in anything else (``lr``, ``batch_size``,
    ``max_epochs``, ``module__*``, pipeline steps, ...) form one stack per
    setting; so do folds whose training labels lack a class (their network
    has fewer outputs). Fits that cannot be stacked (a BatchNorm layer, an
    optimizer other than Adam / AdamW, callbacks of your own, a
    ``train_transform``, a module returning means only, ...) are trained one by one as ``GridSearchCV`` would, with a
    :class:`StackingFallbackWarning` that says why.

    Parameters
    ----------
    estimator : SoftRegCNNClassifier, SoftRegRegressor, or a Pipeline ending in one
    param_grid : dict or list of dicts
    scoring, n_jobs, refit, cv, verbose, pre_dispatch, error_score, return_train_score
        As in ``GridSearchCV``. ``n_jobs`` spreads the stacks over joblib
        workers, and splits a stack into ``n_jobs`` parts when there are
        fewer stacks than workers. ``verbose >= 1`` also draws a tqdm bar
        over the epochs of each stack, with the number of members still training.
    max_stack_size : int or None, default=None
        The most members one stack trains at once (memory grows with it:
        weights, Adam moments and one batch per member); larger stacks are
        split. ``None``: no limit.
    mixed_precision : {None, "bf16"}, default=None
        ``"bf16"`` runs the stacks' training forward passes under
        ``torch.autocast`` with bfloat16 (the weights, the optimizer, the
        losses, validation and scoring stay in float32). It changes the
        numerics: members no longer equal their independent fits to float
        rounding. It pays for convolutions on a CPU with native bfloat16
        (AVX512-BF16 or AMX); elsewhere it can be many times slower (see the
        docs page "Tuning in one pass"). Fits that fall back to one by one,
        and the refit, train in float32.

    Attributes
    ----------
    cv_results_, best_estimator_, best_score_, best_params_, best_index_, scorer_, n_splits_,
    refit_time_, multimetric_, classes_, n_features_in_, feature_names_in_
        As in ``GridSearchCV``. ``mean_fit_time`` and ``std_fit_time`` are a
        stack's wall time (setting up its members, training, and their
        ``_after_fit``) divided equally among its members. The refit is one
        ordinary ``fit``.
    n_stacks_ : int
        Number of stacks trained.
    n_fallback_fits_ : int
        Number of fits trained one by one.

    See Also
    --------
    sklearn.model_selection.GridSearchCV : the same search, one fit at a time.

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from sk_softreg import SoftRegRegressor
    >>> from sk_softreg.model_selection import BatchedGridSearchCV
    >>> X, y = make_regression(n_samples=120, n_features=4, random_state=0)
    >>> search = BatchedGridSearchCV(
    ...     SoftRegRegressor(max_epochs=3, random_state=0, device="cpu"),
    ...     {"lambda1": [0.0, 1e-4], "alpha": [0.0, 0.1]}, cv=3,
    ... ).fit(X, y)
    >>> search.n_stacks_, len(search.cv_results_["params"])
    (1, 4)
    """

    _parameter_constraints = {
        **GridSearchCV._parameter_constraints,
        "max_stack_size": [Interval(Integral, 1, None, closed="left"), None],
        "mixed_precision": [StrOptions({"bf16"}), None],
    }

    def __init__(
        self,
        estimator,
        param_grid,
        *,
        scoring=None,
        n_jobs=None,
        refit=True,
        cv=None,
        verbose=0,
        pre_dispatch="2*n_jobs",
        error_score=np.nan,
        return_train_score=False,
        max_stack_size=None,
        mixed_precision=None,
    ):
        super().__init__(
            estimator,
            param_grid,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.max_stack_size = max_stack_size
        self.mixed_precision = mixed_precision

    def set_callbacks(self, *callbacks):
        """Not supported: scikit-learn's callbacks (:mod:`sklearn.callback`, 1.9+).

        ``GridSearchCV`` runs them on each fit; the stacked fits are not run
        through the callback contexts, so they would be silently left out.
        ``verbose=1`` draws a progress bar over each stack's epochs.

        Raises
        ------
        NotImplementedError
            If any callback is given (``set_callbacks()`` with none is allowed).
        """
        if callbacks:
            raise NotImplementedError(
                "BatchedGridSearchCV does not run scikit-learn's callbacks (sklearn.callback); "
                "use GridSearchCV for them, or verbose=1 for a progress bar over each "
                "stack's epochs."
            )
        return self

    def _run_search(self, evaluate_candidates):
        """Search all candidates in ``param_grid``."""
        evaluate_candidates(ParameterGrid(self.param_grid))

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, **params):
        """Run fit with all sets of parameters, stacking the fits that can be.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        **params : dict
            Fit parameters (``sample_weight``, ``groups`` for the splitter,
            ...), routed as by ``GridSearchCV.fit``.

        Returns
        -------
        self
        """
        scorers, refit_metric = self._get_scorers()
        X, y = indexable(X, y)
        params = _check_method_params(X, params=params)
        routed = self._get_routed_params_for_fit(params)
        cv_orig = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        self._check_input_parameters(X=X, y=y, split_params=routed.splitter.split)
        n_splits = cv_orig.get_n_splits(X, y, **routed.splitter.split)
        self.n_splits_ = n_splits
        base_estimator = clone(self.estimator)
        self.n_stacks_ = self.n_fallback_fits_ = 0
        all_candidates, all_out = [], []
        all_more_results = defaultdict(list)
        results = {}

        def evaluate_candidates(candidate_params, cv=None, more_results=None):
            nonlocal results
            candidate_params = list(candidate_params)
            splits = list((cv or cv_orig).split(X, y, **routed.splitter.split))
            if len(splits) != n_splits:
                raise ValueError(
                    "cv.split and cv.get_n_splits return inconsistent results. "
                    f"Expected {n_splits} splits, got {len(splits)}"
                )
            if self.verbose > 0:
                n_candidates = len(candidate_params)
                print(
                    f"Fitting {n_splits} folds for each of {n_candidates} candidates, "
                    f"totalling {n_candidates * n_splits} fits"
                )
            out = self._evaluate(base_estimator, X, y, candidate_params, splits, scorers, routed)
            if len(out) < 1:
                raise ValueError(
                    "No fits were performed. Was the CV iterator empty? Were there no candidates?"
                )
            _warn_or_raise_about_fit_failures(out, self.error_score)
            if callable(self.scoring):
                _insert_error_scores(out, self.error_score)
            all_candidates.extend(candidate_params)
            all_out.extend(out)
            for key, value in (more_results or {}).items():
                all_more_results[key].extend(value)
            results = self._format_results(all_candidates, n_splits, all_out, all_more_results)
            return results

        self._run_search(evaluate_candidates)
        first_test_score = all_out[0]["test_scores"]
        self.multimetric_ = isinstance(first_test_score, dict)
        if callable(self.scoring) and self.multimetric_:
            self._check_refit_for_multimetric(first_test_score)
            refit_metric = self.refit
        if self.refit or not self.multimetric_:
            self.best_index_ = self._select_best_index(self.refit, refit_metric, results)
            if not callable(self.refit):
                self.best_score_ = results[f"mean_test_{refit_metric}"][self.best_index_]
            self.best_params_ = results["params"][self.best_index_]
        if self.refit:
            self.best_estimator_ = clone(base_estimator).set_params(
                **clone(self.best_params_, safe=False)
            )
            start = time.time()
            if y is not None:
                self.best_estimator_.fit(X, y, **routed.estimator.fit)
            else:
                self.best_estimator_.fit(X, **routed.estimator.fit)
            self.refit_time_ = time.time() - start
            if hasattr(self.best_estimator_, "feature_names_in_"):
                self.feature_names_in_ = self.best_estimator_.feature_names_in_
        self.scorer_ = getattr(scorers, "_scorers", scorers)
        self.cv_results_ = results
        return self

    # ------------------------------------------------------------------
    def _evaluate(self, base_estimator, X, y, candidates, splits, scorers, routed):
        """``_fit_and_score``'s results for every candidate × split, in sklearn's order."""
        tasks = self._tasks(base_estimator, candidates, len(splits))
        kwargs = dict(
            scorer=scorers,
            fit_params=routed.estimator.fit,
            score_params=routed.scorer.score,
            return_train_score=self.return_train_score,
            error_score=self.error_score,
            verbose=self.verbose,
            caller=self,
        )
        outputs = Parallel(n_jobs=self.n_jobs, pre_dispatch=self.pre_dispatch)(
            delayed(_evaluate_task)(
                base_estimator, X, y, task, candidates, splits, kwargs, self.mixed_precision
            )
            for task in tasks
        )
        out = [None] * (len(candidates) * len(splits))
        reasons = {}
        for results, n_stacks, fallbacks in outputs:
            self.n_stacks_ += n_stacks
            for (cand, split), result in results:
                out[cand * len(splits) + split] = result
            for reason in fallbacks:
                reasons[reason] = reasons.get(reason, 0) + 1
        for reason, count in reasons.items():
            self.n_fallback_fits_ += count
            warn(f"{count} fit(s) were trained one by one, not stacked: {reason}.",
                 StackingFallbackWarning)
        return out

    def _tasks(self, base_estimator, candidates, n_splits):
        """Lists of ``(candidate, split)`` to train together (one joblib task each).

        Candidates are grouped by their parameters outside the stackable
        ones; a group's fits on all folds make one task, split into parts
        of at most ``max_stack_size`` fits, and into ``n_jobs`` parts in all
        when there are fewer groups than workers. A part takes every
        ``n_parts``-th fit of its group.
        """
        stackable = _stackable_names(base_estimator)
        groups = []
        for index, params in enumerate(candidates):
            fixed = {k: v for k, v in params.items() if k not in stackable}
            for key, members in groups:
                if _same_params(key, fixed):
                    members.append(index)
                    break
            else:
                groups.append((fixed, [index]))
        workers = effective_n_jobs(self.n_jobs)
        tasks = []
        for _, members in groups:
            fits = [(cand, split) for cand in members for split in range(n_splits)]
            parts = max(1, math.ceil(workers / len(groups)))
            if self.max_stack_size is not None:
                parts = max(parts, math.ceil(len(fits) / self.max_stack_size))
            parts = min(parts, len(fits))
            # every parts-th fit: neighbouring candidates (which often share what makes a
            # stack costly, e.g. alpha > 0) spread over the parts, so the workers get
            # equal work
            tasks += [fits[start::parts] for start in range(parts)]
        return tasks


def _stackable_names(estimator):
    """The parameter names (as ``param_grid`` spells them) that may differ within a stack."""
    if isinstance(estimator, Pipeline):
        final = estimator.steps[-1][0]
        return {f"{final}__{name}" for name in STACKABLE_PARAMS}
    return set(STACKABLE_PARAMS)


def _same_params(a, b):
    """Whether two parameter dicts hold the same values (the same objects, or equal ones)."""
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        other = b[key]
        if value is other:
            continue
        try:
            if type(value) is not type(other) or not bool(value == other):
                return False
        except (TypeError, ValueError):  # arrays and other values without a truth value
            return False
    return True


def _evaluate_task(base_estimator, X, y, task, candidates, splits, kwargs, mixed_precision=None):
    """Train one task's fits (stacked where they can be, with ``mixed_precision``) and score each.

    Returns ``(results, n_stacks, fallback_reasons)``, with ``results`` a list
    of ``((candidate, split), _fit_and_score result)``.
    """
    fit_params = kwargs["fit_params"] or {}
    prepared, results, fallbacks = [], [], []

    verbose = kwargs["verbose"]

    def progress(cand, split):
        return {"split_progress": (split, len(splits)),
                "candidate_progress": (cand, len(candidates))}

    def fit_alone(cand, split, reason):
        """The fit as GridSearchCV makes it, for a fit that does not stack."""
        train, test = splits[split]
        fallbacks.append(reason)
        results.append(((cand, split), _fit_and_score(
            clone(base_estimator), X, y, train=train, test=test, parameters=candidates[cand],
            return_n_test_samples=True, return_times=True, return_parameters=False,
            **progress(cand, split), **kwargs,
        )))

    for cand, split in task:
        train = splits[split][0]
        estimator = clone(base_estimator).set_params(**clone(candidates[cand], safe=False))
        start = time.time()
        member = _prepare(estimator, X, y, train, _check_method_params(X, fit_params, indices=train))
        if member is None or member.reason is not None:
            fit_alone(cand, split, _not_softreg(estimator) if member is None else member.reason)
        else:
            prepared.append(((cand, split), estimator, member, time.time() - start))
    stacks = {}
    for item in prepared:
        member = item[2]
        stacks.setdefault(None if member.error is not None else stack_key(member), []).append(item)
    n_stacks = 0
    for key, items in stacks.items():
        start = time.time()
        if key is not None:
            for (cand, split), *_ in items:
                _print_fit_line("START", verbose, candidates[cand], **progress(cand, split))
            try:
                train_stack(
                    [item[2] for item in items],
                    progress=_progress_bar(kwargs["verbose"], items),
                    mixed_precision=mixed_precision,
                )
            except Exception as error:  # e.g. an operation that vmap does not support
                for (cand, split), *_ in items:
                    fit_alone(cand, split, f"training the stack raised {error!r}")
                continue
            n_stacks += 1
        share = (time.time() - start + sum(item[3] for item in items)) / len(items)
        for (cand, split), estimator, member, _ in items:
            train, test = splits[split]
            with _fitted_as_is(estimator, member.error):
                result = _fit_and_score(
                    estimator, X, y, train=train, test=test, parameters=None,
                    return_n_test_samples=True, return_times=True, return_parameters=False,
                    **{**kwargs, "fit_params": None, "verbose": 0},
                )
            result["fit_time"] = share
            _print_fit_line("END", verbose, candidates[cand], result, **progress(cand, split))
            results.append(((cand, split), result))
    return results, n_stacks, fallbacks


def _print_fit_line(kind, verbose, parameters, result=None, *, split_progress,
                    candidate_progress):
    """A stacked fit's ``[CV ...] START`` or ``END`` line, as ``_fit_and_score`` prints a fit's.

    A stacked fit is scored with ``verbose=0`` (``_fit_and_score`` would time only
    its scoring, and would set the candidate's parameters again on the trained
    estimator). START lines come before the stack trains; an END line's total time
    is the fit's share of the stack's time plus its scoring time.
    """
    if verbose <= 1 or (kind == "START" and verbose <= 9):
        return
    progress = ""
    if verbose > 2:
        progress = f" {split_progress[0] + 1}/{split_progress[1]}"
        if verbose > 9:
            progress += f"; {candidate_progress[0] + 1}/{candidate_progress[1]}"
    params = ", ".join(f"{k}={parameters[k]}" for k in sorted(parameters))
    if kind == "START":
        line = f"[CV{progress}] START {params}"
        print(f"{line}{(80 - len(line)) * '.'}")
        return
    message = params + (";" if params else "")
    if verbose > 2:
        test, train = result["test_scores"], result.get("train_scores")
        if isinstance(test, dict):
            for name in sorted(test):
                message += f" {name}: ("
                if train is not None:
                    message += f"train={train[name]:.3f}, "
                message += f"test={test[name]:.3f})"
        else:
            message += ", score="
            message += f"{test:.3f}" if train is None else f"(train={train:.3f}, test={test:.3f})"
    total = result["fit_time"] + result["score_time"]
    message += f" total time={logger.short_format_time(total)}"
    line = f"[CV{progress}] END "
    print(line + "." * (80 - len(line) - len(message)) + message)


def _not_softreg(estimator):
    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    return f"{type(final).__name__} is not an sk_softreg estimator"


def _prepare(estimator, X, y, train, fit_params):
    """The fit's :class:`~sk_softreg._stacked_members.Member`; None where the net is not sk_softreg's.

    ``estimator.fit`` runs with the net's own ``fit`` replaced by one that
    records its arguments, so a Pipeline fits its steps before the net as in
    its own ``fit`` (routing included); the net is then set up by
    :func:`~sk_softreg._stacked_members.prepare_member`. An exception on the way is
    kept as the member's ``error`` (the fit then gets ``error_score``).
    """
    net = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    if not isinstance(net, SoftRegMixin):
        return None
    X_train, y_train = _safe_split(estimator, X, y, train)
    captured = {}

    def record(X, y=None, **params):
        captured.update(X=X, y=y, params=params)
        return net

    try:
        with _replaced_fit(net, record):
            estimator.fit(X_train, y_train, **fit_params)
        params = dict(captured["params"])
        sample_weight = params.pop("sample_weight", None)
        return prepare_member(net, captured["X"], captured["y"], sample_weight, **params)
    except Exception as error:
        member = Member(net)
        member.error = error
        return member


@contextmanager
def _replaced_fit(estimator, fit):
    """Within, ``estimator.fit`` is ``fit`` (an instance attribute over the method)."""
    estimator.fit = fit
    try:
        yield estimator
    finally:
        del estimator.fit


def _fitted_as_is(estimator, error=None):
    """``estimator.fit`` returns the estimator as trained already, or raises ``error``."""

    def fit(*args, **kwargs):
        if error is not None:
            raise error
        return estimator

    return _replaced_fit(estimator, fit)


def _progress_bar(verbose, items):
    """A per-epoch callback drawing a tqdm bar for ``verbose >= 1``, else None."""
    if not verbose:
        return None
    from tqdm.auto import tqdm

    net = items[0][2].net
    bar = tqdm(total=net.max_epochs, desc=f"stack of {len(items)}", unit="epoch")

    def update(epoch, running):
        bar.update(1)
        bar.set_postfix(training=running)
        if not running or epoch >= net.max_epochs:
            bar.close()

    return update
