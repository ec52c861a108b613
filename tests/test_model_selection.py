"""BatchedGridSearchCV: the same search as GridSearchCV, with the fits trained as stacks.

Every comparison runs both searches on the same grid and folds. With dropout
0 and a random_state, a stacked member's predictions equal the independent
fit's to float rounding, so scorers that return a prediction (``_pred``) or a
fitted attribute (``_attr``) compare the fitted members themselves.
"""

import pickle
import re
import warnings

import joblib
import numpy as np
import pytest
import sklearn
import torch
from _user_module import UserMeans
from sklearn.base import clone
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import GradientNormClipping
from torch import nn

from sk_softreg import (
    BatchedGridSearchCV,
    NonFiniteLossError,
    SoftRegCNNClassifier,
    SoftRegRegressor,
    _stacked,
)
from sk_softreg._demo import sparsest_within_one_se
from sk_softreg._stacked import train_stack
from sk_softreg._stacked_members import prepare_member
from sk_softreg.model_selection import StackingFallbackWarning
from sk_softreg.plot import sparsity_scorer

TOL = 1e-4


class FlatMLP(nn.Module):
    """An MLP for the classifier: ``nn.Flatten`` and ``nn.Linear`` layers."""

    def __init__(self, input_shape=(1, 8, 8), n_classes=10, hidden=16):
        super().__init__()
        n = int(np.prod(input_shape))
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, X):
        return self.net(X)


class NormedMLP(nn.Module):
    """An MLP with a BatchNorm layer, which vmap cannot train."""

    def __init__(self, n_features=1, n_outputs=1):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 2 * n_outputs)

    def forward(self, X):
        return self.head(self.body(X))


class Branchy(nn.Module):
    """Data-dependent control flow in forward, which vmap cannot trace."""

    def __init__(self, n_features=1, n_outputs=1):
        super().__init__()
        self.lin = nn.Linear(n_features, 2 * n_outputs)

    def forward(self, X):
        out = self.lin(X)
        return out * 2 if out.sum() > 1e9 else out


class Scaled(nn.Module):
    """A module whose forward takes a keyword, passed as a fit parameter."""

    def __init__(self, n_features=1, n_outputs=1):
        super().__init__()
        self.lin = nn.Linear(n_features, 2 * n_outputs)

    def forward(self, X, scale=1.0):
        return self.lin(X) * scale


def _pred(row, std=False):
    """A scorer returning the prediction (first output) for test row ``row``; with ``std``,
    the regressor's predictive std there."""
    def score(est, X, y):
        if std:
            out = est.predict(X, return_std=True)[1]
        else:
            out = est.predict_proba(X) if hasattr(est, "predict_proba") else est.predict(X)
        return float(np.ravel(out[row])[0])
    return score


def _attr(name, fn=float):
    def score(est, X, y):
        net = est[-1] if hasattr(est, "steps") else est
        return fn(getattr(net, name))
    return score


def _valid_acc_sum(est, X, y):
    """The sum over epochs of the history's ``valid_acc``: every epoch's validation accuracy."""
    return float(sum(est.history[:, "valid_acc"]))


SCORING = {"p0": _pred(0), "p1": _pred(1), "p2": _pred(-1), "sparsity": _attr("sparsity_"),
           "n_iter": _attr("n_iter_"), "best_epoch": _attr("best_epoch_"),
           "history": _attr("history_", len)}


def _both(estimator, grid, X, y, **kwargs):
    """BatchedGridSearchCV and GridSearchCV fitted on the same grid and folds."""
    kwargs.setdefault("cv", KFold(3, shuffle=True, random_state=0))
    fit_params = kwargs.pop("fit_params", {})
    batched = BatchedGridSearchCV(estimator, grid, **kwargs).fit(X, y, **fit_params)
    plain = GridSearchCV(estimator, grid, **kwargs).fit(X, y, **fit_params)
    return batched, plain


def _assert_same_splits(batched, plain, atol=TOL):
    keys = [k for k in plain.cv_results_ if k.startswith("split") or k.startswith("mean_test")]
    assert keys
    for key in keys:
        np.testing.assert_allclose(batched.cv_results_[key], plain.cv_results_[key], atol=atol,
                                   err_msg=key)


@pytest.fixture(scope="module")
def reg_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, 5))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0, 1.5]) + 0.3 * rng.normal(size=160)
    return X, y  # y of unit-ish scale: a 1e-4 tolerance on predictions means something


REG_GRID = {"lambda1": [0.0, 1e-3], "lambda2": [0.0, 1e-2], "alpha": [0.0, 0.5]}


def _regressor(**params):
    params = {"max_epochs": 3, "module__dropout": 0.0, "module__hidden_units": (16,),
              "random_state": 0, "device": "cpu", **params}
    return SoftRegRegressor(**params)


def _classifier(**params):
    params = {"module": FlatMLP, "max_epochs": 3, "random_state": 0, "device": "cpu",
              "batch_size": 32, **params}
    return SoftRegCNNClassifier(**params)


# ----------------------------------------------------------------------
# equivalence with independent fits
def test_regressor_members_equal_independent_fits(reg_data):
    X, y = reg_data
    batched, plain = _both(_regressor(early_stopping=True, n_iter_no_change=2), REG_GRID, X, y,
                           scoring=SCORING, refit=False)
    _assert_same_splits(batched, plain)
    assert batched.n_stacks_ == 1 and batched.n_fallback_fits_ == 0
    assert np.ptp(batched.cv_results_["mean_test_p0"]) > 1e-3  # the candidates differ


def test_classifier_mlp_members_equal_independent_fits(small_digits):
    X, y = small_digits
    grid = {"lambda1": [0.0, 1e-3], "alpha": [0.0, 0.1], "random_state": [0, 1]}
    batched, plain = _both(_classifier(class_weight="balanced"), grid, X[:150], y[:150],
                           scoring=SCORING, refit=False, cv=3)
    _assert_same_splits(batched, plain)
    assert batched.n_stacks_ == 1


@pytest.mark.parametrize("early_stopping", [False, True])
def test_cnn_members_equal_independent_fits(small_digits, early_stopping):
    """The default SoftRegCNN stacks through its direct forward (one grouped convolution
    for all members), and every member equals its own fit; with early stopping, its
    validation runs through that forward too."""
    X, y = small_digits
    est = SoftRegCNNClassifier(max_epochs=4 if early_stopping else 2, random_state=0,
                               device="cpu", batch_size=32, module__channels=(4, 8),
                               module__hidden_units=16, module__dropout=0.0,
                               early_stopping=early_stopping, n_iter_no_change=1,
                               validation_fraction=0.2)  # 12 rows: one of each class
    grid = {"lambda1": [0.0, 1e-3], "alpha": [0.0, 0.1]}
    scoring = {**SCORING, "valid_acc": _valid_acc_sum} if early_stopping else SCORING
    with warnings.catch_warnings():
        warnings.simplefilter("error", StackingFallbackWarning)
        batched, plain = _both(est, grid, X[:120] / 16, y[:120], scoring=scoring, refit=False,
                               cv=2)
    _assert_same_splits(batched, plain)
    assert batched.n_stacks_ == 1 and batched.n_fallback_fits_ == 0


def test_pipeline_and_sample_weight_equal_independent_fits(reg_data):
    X, y = reg_data
    w = np.random.default_rng(1).uniform(0.2, 2.0, len(y))
    pipe = make_pipeline(StandardScaler(), _regressor())
    grid = {"softregregressor__alpha": [0.0, 0.5], "softregregressor__lambda1": [0.0, 1e-3]}
    batched, plain = _both(pipe, grid, X * 5 + 3, y, scoring=SCORING, refit=False,
                           fit_params={"softregregressor__sample_weight": w})
    _assert_same_splits(batched, plain)
    assert batched.n_stacks_ == 1


def test_lambda_features_stacks_and_selects_as_the_fit(reg_data):
    X, y = reg_data
    scoring = {**SCORING, "selected": _attr("n_features_selected_")}
    grid = {"lambda_features": [0.0, 3.0], "lambda1": [0.0, 1e-3]}
    batched, plain = _both(_regressor(max_epochs=4), grid, X, y, scoring=scoring, refit=False)
    _assert_same_splits(batched, plain)
    assert batched.n_stacks_ == 1 and batched.n_fallback_fits_ == 0
    assert min(batched.cv_results_["mean_test_selected"]) < X.shape[1]  # inputs dropped


def test_sample_weight_through_metadata_routing(reg_data):
    X, y = reg_data
    w = np.random.default_rng(2).uniform(0.2, 2.0, len(y))
    with sklearn.config_context(enable_metadata_routing=True):
        est = _regressor().set_fit_request(sample_weight=True).set_score_request(sample_weight=False)
        batched, plain = _both(est, {"alpha": [0.0, 0.5]}, X, y, scoring=SCORING, refit=False,
                               fit_params={"sample_weight": w})
        unweighted = BatchedGridSearchCV(est, {"alpha": [0.0, 0.5]}, refit=False, scoring=SCORING,
                                         cv=KFold(3, shuffle=True, random_state=0)).fit(X, y)
    _assert_same_splits(batched, plain)
    assert not np.allclose(unweighted.cv_results_["mean_test_p0"], batched.cv_results_["mean_test_p0"])


def test_stacked_trainer_matches_fit_on_unequal_members(reg_data):
    """Members with their own seeds, class of rows and validation splits, trained directly."""
    X, y = reg_data
    settings = [dict(random_state=0, lambda1=1e-3), dict(random_state=3, alpha=0.5, tau=0.3),
                dict(random_state=5, lambda2=1e-2)]
    rows = [slice(0, 160), slice(0, 131), slice(20, 117)]  # unequal rows and batch counts
    base = _regressor(early_stopping=True, batch_size=32, max_epochs=4)
    members = [prepare_member(clone(base).set_params(**s), X[r], y[r]) for s, r in zip(settings, rows)]
    train_stack(members)
    for member, s, r in zip(members, settings, rows):
        alone = clone(base).set_params(**s).fit(X[r], y[r])
        np.testing.assert_allclose(member.net.predict(X), alone.predict(X), atol=TOL)
        assert member.net.n_iter_ == alone.n_iter_
        assert [h["train_batch_count"] for h in member.net.history_] == [
            h["train_batch_count"] for h in alone.history_]
        assert list(member.net.history_[-1]) == list(alone.history_[-1])
        np.testing.assert_allclose(member.net.residual_std_, alone.residual_std_, rtol=1e-4)
        np.testing.assert_allclose(member.net.std_scale_, alone.std_scale_, rtol=1e-4)
        np.testing.assert_allclose(member.net.predict(X, return_std=True)[1],
                                   alone.predict(X, return_std=True)[1], rtol=1e-3)


# ----------------------------------------------------------------------
# the interface is GridSearchCV's
def test_cv_results_refit_and_delegation_match_gridsearch(small_digits):
    X, y = small_digits
    grid = {"lambda1": [0.0, 3e-3], "alpha": [0.0, 0.1]}
    scoring = {"accuracy": "accuracy", "sparsity": sparsity_scorer}
    batched, plain = _both(_classifier(), grid, X[:150], y[:150], scoring=scoring,
                           refit=sparsest_within_one_se, return_train_score=True)
    assert list(batched.cv_results_) == list(plain.cv_results_)
    for key, value in plain.cv_results_.items():
        assert np.asarray(batched.cv_results_[key]).dtype == np.asarray(value).dtype, key
    assert batched.best_params_ == plain.best_params_
    assert batched.best_index_ == plain.best_index_
    assert batched.multimetric_ and batched.n_splits_ == 3 and batched.refit_time_ > 0
    assert set(batched.scorer_) == {"accuracy", "sparsity"}
    np.testing.assert_allclose(batched.predict_proba(X[150:160]), plain.predict_proba(X[150:160]))
    np.testing.assert_array_equal(batched.predict(X[150:]), plain.predict(X[150:]))


def test_clone_pickle_joblib_and_params(reg_data, tmp_path):
    X, y = reg_data
    search = BatchedGridSearchCV(_regressor(), {"alpha": [0.0, 0.5]}, cv=2, max_stack_size=3)
    assert clone(search).get_params()["max_stack_size"] == 3
    search.fit(X, y)
    assert search.n_stacks_ == 2  # 4 fits in stacks of at most 3
    loaded = pickle.loads(pickle.dumps(search))
    np.testing.assert_array_equal(loaded.predict(X[:5]), search.predict(X[:5]))
    joblib.dump(search, tmp_path / "search.joblib")
    loaded = joblib.load(tmp_path / "search.joblib")
    np.testing.assert_array_equal(loaded.predict(X[:5]), search.predict(X[:5]))


def test_n_jobs_splits_the_stack_and_gives_the_same_results(reg_data):
    X, y = reg_data
    grid = {"alpha": [0.0, 0.5], "lambda1": [0.0, 1e-3]}
    one = BatchedGridSearchCV(_regressor(), grid, cv=2, scoring=SCORING, refit=False).fit(X, y)
    two = BatchedGridSearchCV(_regressor(), grid, cv=2, scoring=SCORING, refit=False,
                              n_jobs=2).fit(X, y)
    assert one.n_stacks_ == 1 and two.n_stacks_ == 2
    _assert_same_splits(two, one)


@pytest.mark.parametrize("n_jobs, max_stack_size, sizes", [
    (1, None, [6, 6]),         # one stack per lr
    (3, None, [3, 3, 3, 3]),   # fewer groups than workers: each group in ceil(3 / 2) parts
    (4, None, [3, 3, 3, 3]),
    (1, 4, [3, 3, 3, 3]),      # at most 4 fits a stack: 6 fits in 2 parts of 3
])
def test_tasks_split_each_group_over_the_workers_and_the_stack_size(n_jobs, max_stack_size,
                                                                    sizes):
    """Each (candidate, split) is trained once, in the task of its lr group; a group is
    split into enough parts for the workers and the stack size, every part-th fit each."""
    grid = list(sklearn.model_selection.ParameterGrid(
        {"lr": [1e-3, 3e-3], "alpha": [0.0, 0.5, 1.0]}))
    search = BatchedGridSearchCV(_regressor(), grid, n_jobs=n_jobs, max_stack_size=max_stack_size)
    tasks = search._tasks(search.estimator, grid, n_splits=2)
    assert [len(task) for task in tasks] == sizes
    assert sorted(fit for task in tasks for fit in task) == [(c, s) for c in range(6) for s in range(2)]
    for task in tasks:
        assert len({grid[c]["lr"] for c, _ in task}) == 1
        assert len({c for c, _ in task}) > 1  # every part-th fit: candidates spread over parts


def test_other_parameters_make_their_own_stacks(reg_data):
    X, y = reg_data
    grid = {"alpha": [0.0, 0.5], "lr": [1e-3, 3e-3]}
    batched, plain = _both(_regressor(), grid, X, y, scoring=SCORING, refit=False, cv=2)
    assert batched.n_stacks_ == 2
    _assert_same_splits(batched, plain)


def test_verbose_draws_a_bar_over_epochs(reg_data, capsys):
    X, y = reg_data
    BatchedGridSearchCV(_regressor(), {"alpha": [0.0, 0.5]}, cv=2, verbose=1).fit(X, y)
    err = capsys.readouterr().err
    assert "stack of 4" in err and "training=" in err


def test_a_quantile_regressor_with_weights_stacks(reg_data):
    """PinballLoss has a reduction to set to 'none': sample weights work, and its fits
    stack, each equal to its own fit."""
    from sk_softreg.modules import PinballLoss

    X, y = reg_data
    est = _regressor(criterion=PinballLoss, criterion__quantile=0.9)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    with warnings.catch_warnings():
        warnings.simplefilter("error", StackingFallbackWarning)
        # the default score: sklearn 1.9.1's search fails on a dict of callables with
        # sample_weight (an upstream bug)
        batched, plain = _both(est, {"lambda1": [0.0, 1e-3]}, X, y, refit=False,
                               fit_params={"sample_weight": w})
    assert batched.n_stacks_ == 1
    _assert_same_splits(batched, plain)


def _cv_lines(out):
    """The search's printed lines, without the times (which differ by nature)."""
    return [re.sub(r" total time=.*$", "", line).rstrip(".") for line in out.splitlines()
            if line.startswith(("Fitting", "[CV"))]


@pytest.mark.parametrize("verbose", [1, 2, 3, 10])
def test_verbose_prints_what_gridsearchcv_prints(reg_data, capsys, verbose):
    """The header, and each fit's [CV split; candidate] START / END line with its
    parameters and scores, as GridSearchCV prints them (START lines of a stack come
    before it trains, so the order differs; the lines do not)."""
    X, y = reg_data
    kwargs = dict(cv=2, verbose=verbose, refit=False, return_train_score=verbose == 3)
    grid = {"lambda1": [0.0, 1e-3], "lr": [1e-3, 2e-3]}  # two stacks
    BatchedGridSearchCV(_regressor(), grid, **kwargs).fit(X, y)
    batched = capsys.readouterr().out
    GridSearchCV(_regressor(), grid, **kwargs).fit(X, y)
    plain = capsys.readouterr().out
    assert sorted(_cv_lines(batched)) == sorted(_cv_lines(plain))
    assert _cv_lines(batched)[0] == "Fitting 2 folds for each of 4 candidates, totalling 8 fits"
    if verbose > 1:
        assert len(_cv_lines(batched)) == 1 + 8 * (2 if verbose > 9 else 1)
        assert len(re.findall(r"total time=\s*[\d.]+s", batched)) == 8


def test_verbose_lines_of_fallback_fits_count_splits_and_candidates(reg_data, capsys):
    X, y = reg_data
    with pytest.warns(StackingFallbackWarning):
        BatchedGridSearchCV(_module_regressor(module=NormedMLP, max_epochs=2),
                            {"lambda1": [0.0, 1e-3]}, cv=2, verbose=10, refit=False).fit(X, y)
    lines = _cv_lines(capsys.readouterr().out)
    assert "[CV 2/2; 1/2] START lambda1=0.0" in lines
    assert any(line.startswith("[CV 1/2; 2/2] END") and "lambda1=0.001;, score=" in line
               for line in lines)


def test_more_results_gather_over_evaluate_candidates_calls(reg_data):
    """A subclass's _run_search may call evaluate_candidates several times, each with
    its more_results: cv_results_ holds them all, as GridSearchCV's does."""

    def searches():
        for base in (GridSearchCV, BatchedGridSearchCV):
            class InTwoRounds(base):
                def _run_search(self, evaluate_candidates, **kwargs):
                    evaluate_candidates([{"lambda1": 0.0}, {"lambda1": 1e-3}],
                                        more_results={"round": [1, 1]})
                    evaluate_candidates([{"lambda1": 1e-2}], more_results={"round": [2]})

            yield InTwoRounds(_regressor(), {"lambda1": [0.0]}, cv=2, refit=False).fit(*reg_data)

    plain, batched = searches()
    assert list(batched.cv_results_["round"]) == list(plain.cv_results_["round"]) == [1, 1, 2]


def test_set_callbacks_is_refused_not_ignored():
    search = BatchedGridSearchCV(_regressor(), {"lambda1": [0.0]})
    assert search.set_callbacks() is search
    with pytest.raises(NotImplementedError, match="does not run scikit-learn's callbacks"):
        search.set_callbacks(object())


# ----------------------------------------------------------------------
# reliability
def test_diverging_member_gets_error_score_and_the_others_go_on(reg_data):
    X, y = reg_data
    grid = {"lambda2": [0.0, 1e38]}
    with pytest.warns(FitFailedWarning, match="NonFiniteLossError"):
        batched = BatchedGridSearchCV(_regressor(), grid, cv=2, scoring=SCORING,
                                      refit=False).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitFailedWarning)
        plain = GridSearchCV(_regressor(), grid, cv=2, scoring=SCORING, refit=False).fit(X, y)
    scores = batched.cv_results_["mean_test_p0"]
    assert np.isfinite(scores[0]) and np.isnan(scores[1])
    np.testing.assert_allclose(scores[0], plain.cv_results_["mean_test_p0"][0], atol=TOL)
    with pytest.raises(NonFiniteLossError, match="diverged"):
        BatchedGridSearchCV(_regressor(), grid, cv=2, error_score="raise").fit(X, y)


def test_early_stopping_per_member(reg_data, monkeypatch):
    X, y = reg_data
    est = _regressor(early_stopping=True, n_iter_no_change=1, max_epochs=30, lr=0.05)
    grid = {"alpha": [0.0, 1.0], "lambda1": [0.0, 3e-3], "random_state": [0, 1]}
    shrinks = []
    subset = _stacked._Stack.subset
    monkeypatch.setattr(_stacked._Stack, "subset",
                        lambda self, keep: shrinks.append(len(keep)) or subset(self, keep))
    batched, plain = _both(est, grid, X, y, scoring=SCORING, refit=False, cv=2)
    assert shrinks  # the stack dropped its stopped members and went on
    n_iter = np.concatenate([batched.cv_results_[f"split{i}_test_n_iter"] for i in range(2)])
    assert len(set(n_iter)) > 1 and n_iter.max() < 30  # members stopped at different epochs
    _assert_same_splits(batched, plain)


def test_fold_with_a_missing_class_gets_its_own_stack(small_digits):
    X, y = small_digits
    X, y = X[:90], y[:90] % 3
    y = np.where(np.arange(90) < 3, 3, y)  # class 3 only in the first fold's test rows
    batched, plain = _both(_classifier(), {"alpha": [0.0, 0.1]}, X, y, cv=KFold(3),
                           scoring={"p0": _pred(0), "acc": "accuracy"}, refit=False)
    assert batched.n_stacks_ == 2
    _assert_same_splits(batched, plain)


def _float32_weights(est, X, y):
    return float(all(p.dtype == torch.float32 for p in est.module_.parameters()))


@pytest.mark.parametrize("kind", ["cnn", "regressor"])
def test_mixed_precision_bf16_trains_the_stacks_under_autocast(small_digits, reg_data, kind):
    """bfloat16 forward passes move the members' predictions by bfloat16 rounding (not
    float32's), and the members stay float32 estimators. Both networks end in a narrow
    stacked layer (its own backward), the CNN's with dropout before it."""
    if kind == "cnn":
        X, y = small_digits
        X, y, scale = X[:120] / 16, y[:120], 1.0  # predictions are probabilities
        est = SoftRegCNNClassifier(max_epochs=2, random_state=0, device="cpu", batch_size=32,
                                   module__channels=(4, 8), module__hidden_units=40,
                                   module__dropout=0.25)
    else:
        X, y = reg_data
        scale = np.std(y)  # predictions in y's units
        est = _regressor(module__dropout=0.2)
    grid = {"lambda1": [0.0, 1e-3], "alpha": [0.0, 0.1]}
    scoring = {**SCORING, "float32": _float32_weights}
    kwargs = dict(cv=KFold(2, shuffle=True, random_state=0), scoring=scoring, refit=False)
    fp32 = BatchedGridSearchCV(est, grid, **kwargs).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StackingFallbackWarning)
        bf16 = BatchedGridSearchCV(est, grid, mixed_precision="bf16", **kwargs).fit(X, y)
    assert bf16.n_stacks_ == 1 and bf16.n_fallback_fits_ == 0
    assert np.all(bf16.cv_results_["mean_test_float32"] == 1.0)
    for key in ("split0_test_p0", "split1_test_p1", "split0_test_p2"):
        diff = np.abs(bf16.cv_results_[key] - fp32.cv_results_[key])
        assert diff.max() > 1e-5, key  # far above float32 rounding: autocast was on
        assert diff.max() < 0.05 * scale, key  # and the same training


def test_mixed_precision_rejects_other_values(reg_data):
    X, y = reg_data
    search = BatchedGridSearchCV(_regressor(), {"alpha": [0.0]}, cv=2, mixed_precision="fp16")
    with pytest.raises(ValueError, match="'mixed_precision' parameter"):
        search.fit(X, y)


@pytest.mark.parametrize("grid", [{"no_such_param": [1, 2]}, []])
def test_bad_param_grid_raises_as_gridsearch(reg_data, grid):
    X, y = reg_data
    with pytest.raises(Exception) as expected:
        GridSearchCV(_regressor(), grid, cv=2).fit(X, y)
    with pytest.raises(type(expected.value)) as got:
        BatchedGridSearchCV(_regressor(), grid, cv=2).fit(X, y)
    assert str(got.value) == str(expected.value)


def test_a_stack_that_vmap_cannot_train_falls_back(reg_data):
    X, y = reg_data
    est = SoftRegRegressor(module=Branchy, max_epochs=2, random_state=0, device="cpu")
    with pytest.warns(StackingFallbackWarning, match="training the stack raised"):
        batched = BatchedGridSearchCV(est, {"alpha": [0.0, 0.5]}, cv=2, scoring=SCORING,
                                      refit=False).fit(X, y)
    plain = GridSearchCV(est, {"alpha": [0.0, 0.5]}, cv=2, scoring=SCORING, refit=False).fit(X, y)
    assert batched.n_fallback_fits_ == 4 and batched.n_stacks_ == 0
    _assert_same_splits(batched, plain, atol=0)


def test_global_rng_draws_are_those_of_gridsearch(reg_data):
    """Stacks train on forked RNG streams: the global stream moves as under GridSearchCV."""
    X, y = reg_data
    states = []
    for cls in (BatchedGridSearchCV, GridSearchCV):
        torch.manual_seed(123)
        cls(_regressor(), {"alpha": [0.0, 0.5]}, cv=2).fit(X, y)
        states.append(torch.get_rng_state())
    assert torch.equal(*states)


class DropoutHeads(nn.Module):
    """A user's regression module with ``nn.Dropout``: means and log-variances from one
    head, and a ``forward`` without ``dropout_free`` (the KL needs a second pass)."""

    def __init__(self, n_features=1, n_outputs=1):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, 16), nn.ReLU(), nn.Dropout(0.3))
        self.head = nn.Linear(16, 2 * n_outputs)

    def forward(self, X):
        return self.head(self.body(X))


@pytest.mark.parametrize("module", ["GaussianMLP", "DropoutHeads"])
def test_alpha_members_with_dropout_share_a_stack(reg_data, module):
    """With dropout, the alpha == 0 and alpha > 0 members train in one stack, which runs
    the KL's dropout-free pass for all (in the same pass for GaussianMLP's direct forward,
    in a second one under vmap for a user's module): at a negligible lr the first epoch's
    KL (on the dropout-free output, the same in any batch order) equals each independent
    fit's, and is 0 at alpha == 0."""
    X, y = reg_data
    if module == "GaussianMLP":
        est = _regressor(module__dropout=0.3, lr=1e-12, max_epochs=1)
    else:
        est = SoftRegRegressor(module=DropoutHeads, lr=1e-12, max_epochs=1, random_state=0,
                               device="cpu")
    scoring = {"kl": lambda est, X, y: float(est.history[0, "train_kl"])}
    for grid in ({"alpha": [0.0, 0.5]}, {"alpha": [0.5, 0.0]}):  # the first member either
        batched, plain = _both(est, grid, X, y, scoring=scoring, refit=False, cv=2)
        assert batched.n_stacks_ == 1 and batched.n_fallback_fits_ == 0
        for i in range(2):
            kl = batched.cv_results_[f"split{i}_test_kl"]
            np.testing.assert_allclose(kl, plain.cv_results_[f"split{i}_test_kl"], rtol=1e-4)
            assert all((k == 0) == (a == 0) for k, a in zip(kl, batched.cv_results_["param_alpha"]))


@pytest.mark.parametrize("scoring", ["r2", "neg_mean_absolute_error"])
def test_early_stopping_on_a_score_stacks_and_stops_as_the_fit(reg_data, scoring):
    """An estimator's ``scoring`` other than "loss": each member records ``valid_score``
    on its own weights, stops on it and restores its best epoch as its own fit does."""
    X, y = reg_data
    est = _regressor(early_stopping=True, scoring=scoring, n_iter_no_change=1,
                     max_epochs=30, lr=0.05)
    grid = {"alpha": [0.0, 1.0], "lambda1": [0.0, 3e-3]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", StackingFallbackWarning)
        batched, plain = _both(est, grid, X, y, scoring=SCORING, refit=False, cv=2)
    assert batched.n_fallback_fits_ == 0 and batched.n_stacks_ >= 1
    n_iter = np.concatenate([batched.cv_results_[f"split{i}_test_n_iter"] for i in range(2)])
    assert n_iter.max() < 30  # they stopped on the score
    _assert_same_splits(batched, plain)


def test_multilabel_members_equal_independent_fits(small_digits):
    X, y = small_digits
    X, y = X[:120], y[:120]
    Y = np.stack([y % 2, (y > 4), (y % 3 == 0)], axis=1).astype(int)
    scoring = {"p0": _pred(0), "f1": "f1_samples", "n_iter": _attr("n_iter_")}
    with warnings.catch_warnings():
        warnings.simplefilter("error", StackingFallbackWarning)
        batched, plain = _both(_classifier(), {"alpha": [0.0, 0.2], "class_weight": [None, "balanced"]},
                               X, Y, scoring=scoring, refit=False)
    assert batched.n_stacks_ == 1
    _assert_same_splits(batched, plain)


@pytest.mark.parametrize("scoring", ["loss", "accuracy"])
def test_classifier_early_stopping_per_member(small_digits, scoring):
    """The classifier's stacks validate each member on its own held-out rows: its
    ``valid_loss`` and ``valid_acc`` history, its stop and its restored epoch are
    those of its own fit, whether early stopping watches the loss or a score."""
    X, y = small_digits
    est = _classifier(early_stopping=True, scoring=scoring, n_iter_no_change=2, max_epochs=25,
                      lr=0.02)
    grid = {"lambda1": [0.0, 3e-3], "alpha": [0.0, 0.5], "random_state": [0, 1]}
    scoring_ = {**SCORING, "valid_acc": _valid_acc_sum}
    with warnings.catch_warnings():
        warnings.simplefilter("error", StackingFallbackWarning)
        batched, plain = _both(est, grid, X[:200], y[:200], scoring=scoring_, refit=False, cv=2)
    assert batched.n_stacks_ == 1 and batched.n_fallback_fits_ == 0
    n_iter = np.concatenate([batched.cv_results_[f"split{i}_test_n_iter"] for i in range(2)])
    assert len(set(n_iter)) > 1 and n_iter.min() < 25  # members stopped at different epochs
    _assert_same_splits(batched, plain)


def _flip(image):
    """A ``train_transform``: each training image mirrored left to right."""
    return image.flip(-1)


def _module_regressor(**params):
    """A regressor on a module of its own (no ``module__*`` defaults of the tests')."""
    return SoftRegRegressor(random_state=0, device="cpu", **params)


@pytest.mark.parametrize("kind, params, reason", [
    ("module", {"module": NormedMLP}, "BatchNorm1d"),
    ("module", {"module": UserMeans}, "means only"),
    ("regressor", {"callbacks": [("clip", GradientNormClipping(1.0))]}, "callbacks of your own"),
    ("regressor", {"optimizer": torch.optim.SGD, "lr": 0.05}, "the optimizer SGD"),
    ("regressor", {"optimizer__amsgrad": True}, "amsgrad=True"),
    ("classifier", {"train_transform": _flip}, "a train_transform"),
    ("classifier", {"criterion__weight": torch.ones(10)}, "a criterion with class weights"),
    ("regressor", {"early_stopping": True, "lambda2": 1e-3,
                   "callbacks__early_stopping__monitor": "train_l2"},
     "early stopping on 'train_l2'"),
])
def test_settings_that_do_not_stack_fall_back_to_their_own_fits(reg_data, small_digits, kind,
                                                                  params, reason):
    """Each module or setting the stacked trainer does not reproduce trains every fit one
    by one, with a warning that names it, and gives GridSearchCV's results exactly."""
    X, y = (small_digits[0][:90], small_digits[1][:90]) if kind == "classifier" else reg_data
    make = {"module": _module_regressor, "regressor": _regressor, "classifier": _classifier}
    est = make[kind](max_epochs=2, **params)
    grid = {"alpha": [0.0, 0.5]}
    with pytest.warns(StackingFallbackWarning, match=reason):
        batched = BatchedGridSearchCV(est, grid, cv=2, scoring=SCORING, refit=False).fit(X, y)
    plain = GridSearchCV(est, grid, cv=2, scoring=SCORING, refit=False).fit(X, y)
    assert batched.n_fallback_fits_ == 4 and batched.n_stacks_ == 0
    _assert_same_splits(batched, plain, atol=0)


def test_fit_parameters_for_the_forward_fall_back_to_their_own_fits(reg_data):
    """A fit parameter that goes to the module's forward (skorch passes it to every
    batch) is not reproduced by the stacked forward: every fit trains on its own."""
    X, y = reg_data
    est = _module_regressor(module=Scaled, max_epochs=2)
    grid = {"alpha": [0.0, 0.5]}
    with pytest.warns(StackingFallbackWarning, match=r"module's forward \(scale\)"):
        batched = BatchedGridSearchCV(est, grid, cv=2, scoring=SCORING, refit=False).fit(
            X, y, scale=0.5)
    plain = GridSearchCV(est, grid, cv=2, scoring=SCORING, refit=False).fit(X, y, scale=0.5)
    assert batched.n_fallback_fits_ == 4 and batched.n_stacks_ == 0
    _assert_same_splits(batched, plain, atol=0)


def _two_metrics(est, X, y):
    """A callable scorer that returns several metrics at once."""
    pred = est.predict(X)
    return {"neg_mse": -float(np.mean((pred - y) ** 2)), "p0": float(pred[0])}


def test_callable_multimetric_scoring_and_feature_names_as_gridsearch(reg_data):
    """A callable scorer returning a dict makes a multi-metric search that refits on the
    metric ``refit`` names; a DataFrame's column names reach ``feature_names_in_``."""
    import pandas as pd

    X, y = reg_data
    X = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    batched, plain = _both(_regressor(), {"alpha": [0.0, 0.5], "lambda2": [0.0, 1.0]}, X, y,
                           scoring=_two_metrics, refit="neg_mse")
    assert batched.multimetric_ and plain.multimetric_
    assert set(batched.cv_results_) == set(plain.cv_results_)
    _assert_same_splits(batched, plain)
    assert batched.best_params_ == plain.best_params_
    assert list(batched.feature_names_in_) == list(X.columns)
    with pytest.raises(ValueError, match="refit must be set to a scorer key"):  # sklearn's words
        BatchedGridSearchCV(_regressor(), {"alpha": [0.0]}, scoring=_two_metrics, cv=2).fit(X, y)


class _ShortCV:
    """A splitter whose ``split`` yields fewer folds than ``get_n_splits`` says."""

    def split(self, X, y=None, groups=None):
        yield from list(KFold(3).split(X))[:2]

    def get_n_splits(self, X=None, y=None, groups=None):
        return 3


def test_inconsistent_cv_raises_as_gridsearch(reg_data):
    X, y = reg_data
    with pytest.raises(ValueError) as expected:
        GridSearchCV(_regressor(), {"alpha": [0.0]}, cv=_ShortCV()).fit(X, y)
    with pytest.raises(ValueError) as got:
        BatchedGridSearchCV(_regressor(), {"alpha": [0.0]}, cv=_ShortCV()).fit(X, y)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("scoring", ["loss", "f1_samples"])
def test_multilabel_early_stopping_stacks_as_the_fit(small_digits, scoring):
    """Multilabel members validate in the stack too: their ``valid_acc`` is subset accuracy
    (every label on the right side of 0.5), as in their own fits, and they stop and
    restore their best epoch as those fits do."""
    X, y = small_digits
    X, y = X[:200], y[:200]
    Y = np.stack([y % 2, (y > 4), (y % 3 == 0)], axis=1).astype(int)
    est = _classifier(early_stopping=True, scoring=scoring, n_iter_no_change=2, max_epochs=15,
                      lr=0.02)
    scoring_ = {"p0": _pred(0), "n_iter": _attr("n_iter_"), "valid_acc": _valid_acc_sum}
    with warnings.catch_warnings():
        warnings.simplefilter("error", StackingFallbackWarning)
        warnings.simplefilter("ignore", sklearn.exceptions.UndefinedMetricWarning)
        batched, plain = _both(est, {"alpha": [0.0, 0.2], "random_state": [0, 1]}, X, Y,
                               scoring=scoring_, refit=False, cv=2)
    assert batched.n_stacks_ == 1 and batched.n_fallback_fits_ == 0
    n_iter = np.concatenate([batched.cv_results_[f"split{i}_test_n_iter"] for i in range(2)])
    assert len(set(n_iter)) > 1 and n_iter.min() < 15
    assert np.all(batched.cv_results_["mean_test_valid_acc"] > 0)  # some rows all right
    _assert_same_splits(batched, plain)


@pytest.mark.parametrize("early_stopping", [True, False])
@pytest.mark.parametrize("two_outputs", [False, True])
def test_regressor_members_predictive_std_equals_the_fit(reg_data, early_stopping, two_outputs):
    """Each member's ``predict(return_std=True)``, ``residual_std_`` and ``std_scale_``
    (from its held-out rows with early stopping, its training rows without) are its own
    fit's, for one and for two outputs."""
    X, y = reg_data
    if two_outputs:
        y = np.c_[y, X[:, 1] ** 2]
    # 40 epochs at a high lr: the training residuals shrink, and the held-out rows ask
    # for a larger std scale than the training rows do
    est = _regressor(early_stopping=early_stopping, n_iter_no_change=40, max_epochs=40, lr=0.03)
    scoring = {"std0": _pred(0, std=True), "std1": _pred(-1, std=True),
               "residual_std": _attr("residual_std_", np.max),
               "std_scale": _attr("std_scale_", np.max)}
    batched, plain = _both(est, {"alpha": [0.1, 1.0], "lambda2": [0.0, 1e-2]}, X, y,
                           scoring=scoring, refit=False, cv=2)
    assert batched.n_stacks_ == 1
    for key in plain.cv_results_:
        if key.startswith("split"):
            assert np.all(np.isfinite(plain.cv_results_[key])), key
            # 40 steps of float rounding apart (the scale without the held-out rows is ~10% off)
            np.testing.assert_allclose(batched.cv_results_[key], plain.cv_results_[key],
                                       rtol=1e-3, err_msg=key)


def test_members_whose_epoch_ended_sit_out_penalty_steps_and_record_their_history(reg_data):
    """Members with fewer batches sit out the last steps of an epoch entirely: neither
    Adam nor the proximal L1 step nor the group soft-threshold of ``lambda_features``
    moves them there. Every member's history (train_loss and its penalty terms, each the
    batch-size-weighted mean over its own batches) is its own fit's."""
    X, y = reg_data
    settings = [dict(alpha=0.5, lambda1=1e-3),
                dict(lambda1=3e-2, lambda2=1e-2, lambda_features=0.5),
                dict(lambda_features=0.3, alpha=0.2, random_state=2)]
    rows = [slice(0, 160), slice(0, 97), slice(30, 120)]  # 5, 4 and 3 batches, partial last ones
    base = _regressor(batch_size=32, max_epochs=3, lr=0.01)
    members = [prepare_member(clone(base).set_params(**s), X[r], y[r]) for s, r in zip(settings, rows)]
    train_stack(members)
    for member, s, r in zip(members, settings, rows):
        alone = clone(base).set_params(**s).fit(X[r], y[r])
        np.testing.assert_allclose(member.net.predict(X), alone.predict(X), atol=TOL)
        for key in ("train_loss", "train_l1", "train_l2", "train_kl", "train_features"):
            np.testing.assert_allclose(member.net.history_[:, key], alone.history_[:, key],
                                       rtol=1e-4, atol=1e-7, err_msg=key)


def test_drop_last_members_equal_independent_fits(reg_data):
    """``iterator_train__drop_last``: each member drops its own last partial batch."""
    X, y = reg_data
    est = _regressor(batch_size=32, iterator_train__drop_last=True)  # 107 or 106 rows: 3 batches
    batched, plain = _both(est, {"alpha": [0.0, 0.5], "lambda1": [0.0, 1e-3]}, X, y,
                           scoring=SCORING, refit=False)
    assert batched.n_stacks_ == 1
    _assert_same_splits(batched, plain)


def test_folds_with_different_auto_batch_sizes_train_in_their_own_stacks():
    """``batch_size="auto"`` follows each fold's number of rows: at a fixed ``lr``, folds
    on either side of its 2,000-row step share everything but the batch size, and
    must not share a stack."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2999, 3))
    y = X @ np.array([1.0, -1.0, 0.5]) + 0.1 * rng.normal(size=2999)
    est = _regressor(max_epochs=1, lr=1e-3, early_stopping=False)  # 1999, 1999 and 2000 rows
    batched, plain = _both(est, {"alpha": [0.0, 0.5]}, X, y, scoring=SCORING, refit=False,
                           cv=KFold(3))
    assert batched.n_stacks_ == 2
    _assert_same_splits(batched, plain)


def test_stacks_with_dropout_draw_their_masks_from_random_state(reg_data):
    """With dropout, a stack's masks come from its members' ``random_state``, not from the
    global torch stream: the search gives the same results whatever that stream holds."""
    X, y = reg_data
    results = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        search = BatchedGridSearchCV(_regressor(module__dropout=0.3), {"alpha": [0.0, 0.5]}, cv=2,
                                     scoring=SCORING, refit=False).fit(X, y)
        results.append(search.cv_results_)
    for key in ("split0_test_p0", "split1_test_p1", "split0_test_p2"):
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)


def test_fit_time_is_the_stack_time_shared_among_its_members(reg_data, monkeypatch):
    """``mean_fit_time``: a stack's wall time divided among its members. On a clock that
    only the stack's training moves (by 12 s), each of its 12 fits took 1 s."""
    import types

    from sk_softreg import model_selection

    clock = [0.0]
    monkeypatch.setattr(model_selection, "time", types.SimpleNamespace(time=lambda: clock[0]))

    def train_stack_12s(*args, **kwargs):
        clock[0] += 12.0
        return train_stack(*args, **kwargs)

    monkeypatch.setattr(model_selection, "train_stack", train_stack_12s)
    X, y = reg_data
    search = BatchedGridSearchCV(_regressor(max_epochs=2), {"alpha": [0.0, 0.5], "lambda1": [0.0, 1e-3]},
                                 cv=3, refit=False).fit(X, y)
    assert search.n_stacks_ == 1
    np.testing.assert_array_equal(search.cv_results_["mean_fit_time"], 1.0)
    np.testing.assert_array_equal(search.cv_results_["std_fit_time"], 0.0)


def test_diverging_member_stops_at_its_first_non_finite_loss_as_the_fit(reg_data):
    """A member whose loss becomes non-finite stops there, with its fit's own error (the
    epoch and batch where it diverged), not only when its weights end non-finite."""
    X, y = reg_data
    errors = []
    for cls in (GridSearchCV, BatchedGridSearchCV):
        with pytest.raises(NonFiniteLossError) as error:
            cls(_regressor(), {"lambda2": [0.0, 1e38]}, cv=2, error_score="raise").fit(X, y)
        errors.append(str(error.value))
    assert "epoch 1, batch 1" in errors[0]
    assert errors[1] == errors[0]
