"""SoftRegSelectorCV: a warm-started lambda_features path chosen by CV, refit on the kept inputs."""

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, RegressorMixin, clone, is_classifier, is_regressor
from sklearn.datasets import make_classification, make_friedman1
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

import sk_softreg
from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor, SoftRegSelectorCV


def _data(n=600, n_features=8, seed=1):
    X, y = make_friedman1(n, n_features=n_features, noise=0.5, random_state=seed)
    return StandardScaler().fit_transform(X), y


def _selector(**kwargs):
    params = dict(n_lambdas=8, lambda_max=0.3, lambda_min_ratio=0.03, cv=3, relaxed=False,
                  dense_epochs=60, path_epochs=5)
    params["estimator"] = SoftRegRegressor(max_epochs=60, random_state=0)
    params.update(kwargs)
    return SoftRegSelectorCV(**params)


@pytest.fixture(scope="module")
def fitted():
    X, y = _data()
    return _selector().fit(X, y), X, y


def test_exported():
    assert "SoftRegSelectorCV" in sk_softreg.__all__
    assert sk_softreg.feature_selection.SoftRegSelectorCV is SoftRegSelectorCV


def test_keeps_the_informative_inputs_and_drops_noise(fitted):
    sel, X, y = fitted
    assert sel.support_[:5].all(), sel.support_
    assert sel.support_[5:].sum() <= 1, sel.support_
    assert sel.score(X, y) > 0.8


def test_attributes_shapes(fitted):
    sel, X, y = fitted
    n_l = len(sel.lambdas_)
    assert n_l == 8 and np.all(np.diff(sel.lambdas_) > 0)
    assert sel.cv_scores_.shape == (n_l, 3)
    assert sel.cv_n_features_.shape == (n_l, 3)
    assert sel.n_features_path_.shape == (n_l,)
    assert np.all(np.diff(sel.n_features_path_) <= 2)  # roughly decreasing along the path
    assert sel.best_lambda_ == sel.lambdas_[sel.best_index_]
    assert sel.support_.dtype == bool and sel.support_.shape == (8,)
    assert sel.n_features_in_ == 8
    assert sel.feature_importances_.shape == (8,)
    # an input kept at the chosen lambda leaves after it
    assert np.all(sel.feature_importances_[sel.support_] > sel.best_lambda_)
    assert np.all(sel.feature_importances_[~sel.support_] <= sel.best_lambda_)
    np.testing.assert_array_equal(sel.get_support(), sel.support_)
    assert sel.transform(X).shape == (len(X), sel.support_.sum())
    assert sel.estimator_.n_features_in_ == sel.support_.sum()
    assert sel.estimator_.lambda_features == 0.0
    assert sel.predict(X).shape == (len(X),)


def test_one_se_is_sparser_than_best(fitted):
    sel, X, y = fitted
    best = sel._choose.__func__(clone(sel).set_params(selection="best"), sel.cv_scores_)
    assert sel.best_index_ >= best
    mean = sel.cv_scores_.mean(axis=1)
    se = sel.cv_scores_[best].std(ddof=1) / np.sqrt(3)
    assert mean[sel.best_index_] >= mean[best] - se


def test_refit_false_keeps_the_penalized_model():
    X, y = _data(300, 6, seed=2)
    sel = _selector(refit=False, n_lambdas=4, cv=2, dense_epochs=20, path_epochs=2).fit(X, y)
    assert sel.estimator_.n_features_in_ == 6
    assert sel.estimator_.lambda_features == sel.best_lambda_
    assert sel.predict(X).shape == (300,)


def test_pipeline_and_feature_names():
    pd = pytest.importorskip("pandas")
    X, y = _data(300, 6, seed=2)
    df = pd.DataFrame(X, columns=[f"c{i}" for i in range(6)])
    sel = _selector(n_lambdas=4, cv=2, dense_epochs=20, path_epochs=2)
    pipe = make_pipeline(sel, LinearRegression()).fit(df, y)  # df is standardized
    assert list(sel.feature_names_in_) == list(df.columns)
    assert list(sel.get_feature_names_out()) == list(df.columns[sel.support_])
    assert pipe.predict(df).shape == (300,)
    # as the final step, a predictor
    pipe = make_pipeline(StandardScaler(), clone(sel)).fit(df, y)
    assert np.isfinite(pipe.score(df, y))


def test_clone_and_get_params():
    sel = SoftRegSelectorCV(SoftRegRegressor(lambda2=1e-3), n_lambdas=5, selection="best")
    params = sel.get_params()
    assert params["n_lambdas"] == 5 and params["estimator__lambda2"] == 1e-3
    other = clone(sel)
    assert other.get_params()["selection"] == "best"
    assert other.estimator is not sel.estimator
    other.set_params(estimator__lambda2=0.0, cv=3)
    assert other.estimator.lambda2 == 0.0 and sel.estimator.lambda2 == 1e-3


def test_explicit_lambdas_are_sorted():
    X, y = _data(200, 5, seed=3)
    sel = _selector(lambdas=[0.1, 0.01], cv=2, dense_epochs=10, path_epochs=2).fit(X, y)
    np.testing.assert_array_equal(sel.lambdas_, [0.01, 0.1])


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"selection": "min"}, InvalidParameterError, "selection"),
        ({"n_lambdas": 0}, InvalidParameterError, "n_lambdas"),
        ({"lambda_max": "max"}, InvalidParameterError, "lambda_max"),
        ({"relaxed": "yes"}, InvalidParameterError, "relaxed"),
        ({"path_epochs": 0}, InvalidParameterError, "path_epochs"),
        ({"lambdas": [0.1, -1.0]}, ValueError, "lambdas must be finite and > 0"),
        ({"lambdas": []}, ValueError, "non-empty"),
        ({"estimator": LinearRegression()}, ValueError, "lambda_features parameter"),
    ],
)
def test_bad_parameters(params, error, match):
    X, y = _data(100, 5)
    with pytest.raises(error, match=match):
        _selector(**params).fit(X, y)


def test_bad_input():
    sel = _selector()
    with pytest.raises(ValueError, match="NaN"):
        sel.fit(np.full((20, 3), np.nan), np.zeros(20))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        sel.fit(np.zeros((20, 3)), np.zeros(19))
    with pytest.raises(NotFittedError):
        sel.transform(np.zeros((2, 3)))


def test_wrong_number_of_features(fitted):
    sel, X, y = fitted
    with pytest.raises(ValueError, match="features"):
        sel.predict(X[:, :3])


def test_auto_path_settings():
    from sk_softreg.feature_selection import _path_settings

    assert _path_settings(SoftRegRegressor(), "auto") == {
        "early_stopping": False, "batch_size": 2048, "module__dropout": 0.0}
    # the user's batch size and module stay; explicit path_params are used as given
    assert _path_settings(SoftRegRegressor(batch_size=64), "auto") == {
        "early_stopping": False, "module__dropout": 0.0}
    assert _path_settings(SoftRegRegressor(), {"max_epochs": 3}) == {"max_epochs": 3}


class _FlatMLP(nn.Module):
    """nn.Flatten then nn.Linear first: the classifier's inputs as one vector."""

    def __init__(self, input_shape=(1, 1, 6), n_classes=2):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 16),
                                  nn.ReLU(), nn.Linear(16, n_classes))

    def forward(self, X):
        return self.body(X)


@pytest.mark.parametrize("relaxed", [False, True])
def test_classifier_with_a_linear_first_module(relaxed):
    X, y = make_classification(400, n_features=6, n_informative=2, n_redundant=0,
                               n_repeated=0, shuffle=False, class_sep=2.0, random_state=0)
    X = StandardScaler().fit_transform(X)
    clf = SoftRegCNNClassifier(module=_FlatMLP, max_epochs=10 if relaxed else 30,
                               random_state=0, device="cpu")
    n_lambdas, n_folds = (4, 2) if relaxed else (6, 3)
    sel = SoftRegSelectorCV(clf, n_lambdas=n_lambdas, cv=n_folds, dense_epochs=30,
                            path_epochs=5, relaxed=relaxed).fit(X, y)
    assert sel.cv_scores_.shape == (n_lambdas, n_folds) and np.all(np.isfinite(sel.cv_scores_))
    if relaxed:
        # accuracy of refits: one informative input separates the classes almost as
        # well as two, so the one-SE rule may keep one
        assert sel.support_[:2].any() and sel.n_relaxed_fits_ >= n_folds
    else:
        assert sel.support_[:2].all()
    assert sel.predict_proba(X).shape == (400, 2)
    assert sel.score(X, y) > 0.8
    np.testing.assert_array_equal(sel.classes_, [0, 1])


def test_plot_selector_cv(fitted):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from sk_softreg.plot import plot_selector_cv

    sel, X, y = fitted
    ax = plot_selector_cv(sel)
    assert ax.get_xscale() == "log"
    np.testing.assert_array_equal(ax.count_ax.lines[0].get_ydata(), sel.n_features_path_)
    assert len(ax.lines) == 3  # the mean score and the two rules (relaxed=False)
    # relaxed: the penalized path's mean score is drawn too, dashed
    relaxed = clone(sel).set_params(relaxed=True)
    for name in ("lambdas_", "cv_scores_", "n_features_path_", "best_lambda_", "n_features_in_"):
        setattr(relaxed, name, getattr(sel, name))
    relaxed.cv_path_scores_ = sel.cv_scores_ - 0.1
    ax = plot_selector_cv(relaxed)
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1
    np.testing.assert_allclose(dashed[0].get_ydata(), sel.cv_scores_.mean(axis=1) - 0.1)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_stacked_paths_match_the_shapes_and_choose_from_their_own_scores():
    X, y = _data(300, 6, seed=2)
    sel = _selector(stacked=True, n_lambdas=4, cv=2, dense_epochs=20, path_epochs=2).fit(X, y)
    assert sel.cv_scores_.shape == (4, 2) and np.all(np.isfinite(sel.cv_scores_))
    assert sel.cv_n_features_.shape == (4, 2)
    assert sel.n_features_path_.shape == (4,)
    assert sel.best_lambda_ == sel.lambdas_[sel.best_index_]
    assert sel.estimator_.n_features_in_ == sel.support_.sum()


def test_stacked_falls_back_for_a_module_it_cannot_stack():
    from sk_softreg.model_selection import StackingFallbackWarning

    class BN(nn.Module):
        def __init__(self, n_features=1, n_outputs=1):
            super().__init__()
            self.first = nn.Linear(n_features, 8)
            self.rest = nn.Sequential(nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2 * n_outputs))

        def forward(self, X):
            return self.rest(self.first(X))

    X, y = _data(200, 5, seed=3)
    sel = SoftRegSelectorCV(SoftRegRegressor(module=BN, max_epochs=5, random_state=0),
                            stacked=True, n_lambdas=3, cv=2, dense_epochs=5, path_epochs=1)
    with pytest.warns(StackingFallbackWarning, match="BatchNorm1d"):
        sel.fit(X, y)
    assert sel.cv_scores_.shape == (3, 2)


def test_relaxed_scores_refit_once_per_support_and_fold(monkeypatch):
    from sk_softreg import feature_selection

    calls = []
    real = feature_selection._relaxed_score

    def counting(estimator, X, y, train, test, support, scorer):
        calls.append(support.sum())
        return real(estimator, X, y, train, test, support, scorer)

    monkeypatch.setattr(feature_selection, "_relaxed_score", counting)
    X, y = _data(300, 6, seed=2)
    sel = _selector(relaxed=True, n_lambdas=5, lambda_min_ratio=0.01, cv=2, dense_epochs=20,
                    path_epochs=2, estimator=SoftRegRegressor(max_epochs=15, random_state=0))
    sel.fit(X, y)
    assert sel.cv_scores_.shape == sel.cv_path_scores_.shape == (5, 2)
    assert sel.n_relaxed_fits_ == len(calls) < 5 * 2  # the all-input λ values share a refit
    assert not np.allclose(sel.cv_scores_, sel.cv_path_scores_)
    for i in range(2):
        full = sel.cv_scores_[sel.cv_n_features_[:, i] == 6, i]
        assert full.size >= 2 and np.all(full == full[0])
    # the choice is made on the relaxed scores
    assert sel.best_index_ == sel._choose(sel.cv_scores_)


def test_relaxed_score_is_the_refit_on_the_fold():
    from sklearn.metrics import check_scoring
    from sklearn.model_selection import KFold

    X, y = _data(300, 6, seed=2)
    folds = list(KFold(2).split(X))
    sel = _selector(relaxed=True, lambdas=[1e-4, 0.3], cv=folds, dense_epochs=20,
                    path_epochs=2, estimator=SoftRegRegressor(max_epochs=15, random_state=0))
    sel.fit(X, y)
    assert sel.cv_n_features_[0, 0] == 6  # λ = 1e-4 keeps every input
    train, test = folds[0]
    est = clone(sel.estimator).set_params(lambda_features=0.0).fit(X[train], y[train])
    expected = check_scoring(est)(est, X[test], y[test])
    assert sel.cv_scores_[0, 0] == pytest.approx(expected, abs=1e-6)


def test_relaxed_score_without_inputs_is_the_mean_model():
    X, y = _data(200, 5, seed=3)
    sel = _selector(relaxed=True, lambdas=[0.01, 100.0], cv=2, dense_epochs=10,
                    path_epochs=3, refit=False).fit(X, y)
    assert np.all(sel.cv_n_features_[-1] == 0)
    assert np.all(sel.cv_scores_[-1] <= 0.0) and np.all(sel.cv_scores_[-1] > -0.1)
    assert sel.best_index_ == 0


def test_auto_lambda_range_runs_until_one_input_is_left():
    X, y = _data(300, 6, seed=2)
    sel = _selector(lambda_max="auto", n_lambdas=5, lambda_min_ratio=0.01, cv=2,
                    dense_epochs=20, path_epochs=3).fit(X, y)
    ratios = sel.lambdas_[1:] / sel.lambdas_[:-1]
    np.testing.assert_allclose(ratios, ratios[0])  # one geometric grid, continued
    assert sel.lambdas_[-1] > 0.3 and sel.n_features_path_[-1] <= 1
    assert sel.n_features_path_[-2] > 1  # it stops as soon as one input is left
    # it starts at the λ before the first input leaves, on the path over all rows
    assert sel.n_features_path_[0] == 6 or sel.lambdas_[0] == pytest.approx(0.003)
    assert sel.n_features_path_[1] < 6
    assert sel.cv_scores_.shape == (len(sel.lambdas_), 2)


def test_auto_lambda_range_leaves_explicit_lambdas_alone():
    X, y = _data(200, 5, seed=3)
    sel = _selector(lambda_max="auto", lambdas=[0.01, 0.05], cv=2, dense_epochs=10,
                    path_epochs=2).fit(X, y)
    np.testing.assert_array_equal(sel.lambdas_, [0.01, 0.05])


def test_auto_lambda_range_stacked_and_relaxed():
    X, y = _data(300, 6, seed=2)
    sel = _selector(lambda_max="auto", relaxed=True, stacked=True, n_lambdas=4, cv=2,
                    dense_epochs=20, path_epochs=3,
                    estimator=SoftRegRegressor(max_epochs=15, random_state=0)).fit(X, y)
    assert sel.n_features_path_[-1] <= 1
    assert sel.cv_scores_.shape == sel.cv_n_features_.shape == (len(sel.lambdas_), 2)
    assert np.all(np.isfinite(sel.cv_scores_))


def test_stacked_path_on_all_rows_gives_the_kept_inputs():
    rng = np.random.RandomState(0)
    n = 200
    X = rng.randn(2 * n, 3)
    y = 2.0 * X[:, 0]
    y[:n] = 0.1 * rng.randn(n)  # the first fold trains on rows where y is noise
    folds = [(np.arange(n), np.arange(n, 2 * n)), (np.arange(n, 2 * n), np.arange(n))]
    sel = SoftRegSelectorCV(SoftRegRegressor(max_epochs=20, random_state=0, device="cpu"),
                            lambdas=[0.01, 0.5], cv=folds, relaxed=False, stacked=True,
                            dense_epochs=20, path_epochs=10).fit(X, y)
    assert sel.cv_n_features_[-1, 0] == 0  # the noise fold's path drops every input
    # n_features_path_ and support_ come from the path on all the rows, which keeps x0
    assert sel.n_features_path_[-1] >= 1
    assert sel.support_[0]


class _StepPath(RegressorMixin, BaseEstimator):
    """A stand-in: input j's column is zero once lambda_features >= leave[j]; a linear fit."""

    def __init__(self, leave=(1.0,), lambda_features=0.0, max_epochs=1, warm_start=False):
        self.leave = leave
        self.lambda_features = lambda_features
        self.max_epochs = max_epochs
        self.warm_start = warm_start

    def fit(self, X, y):
        self.n_features_in_ = X.shape[1]
        self.w_ = np.array([float(self.lambda_features < t) for t in self.leave[:X.shape[1]]])
        self.model_ = LinearRegression().fit(X * self.w_, y)
        return self

    def predict(self, X):
        return self.model_.predict(X * self.w_)

    def _feature_weight(self):
        return torch.tensor(self.w_[None, :])


def _linear(n=120, n_features=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, n_features)
    return X, X @ np.arange(1.0, n_features + 1) + 0.1 * rng.randn(n)


def test_auto_range_stops_at_the_first_lambda_with_one_input_left():
    X, y = _linear()
    # step 2 on the grid of lambda_max=0.3; the inputs leave at 0.5, 1.0, 2.0, 4.0
    sel = SoftRegSelectorCV(_StepPath(leave=(0.5, 1.0, 2.0, 4.0)), lambda_max="auto",
                            n_lambdas=6, lambda_min_ratio=1 / 32, cv=2, path_params={},
                            selection="best", relaxed=False, dense_epochs=1, path_epochs=1)
    sel.fit(X, y)
    np.testing.assert_allclose(sel.lambdas_, [0.3, 0.6, 1.2, 2.4])
    np.testing.assert_array_equal(sel.n_features_path_, [4, 3, 2, 1])
    np.testing.assert_allclose(sel.feature_importances_, [0.6, 1.2, 2.4, np.inf])


def test_auto_range_adds_at_most_n_lambdas_values():
    X, y = _linear(n_features=3)
    sel = SoftRegSelectorCV(_StepPath(leave=(1e3, 1e3, 1e3)), lambda_max="auto", n_lambdas=3,
                            lambda_min_ratio=0.25, cv=2, path_params={}, relaxed=False,
                            dense_epochs=1, path_epochs=1)
    sel.fit(X, y)  # no input ever leaves
    np.testing.assert_allclose(sel.lambdas_, 0.3 * 2.0 ** np.arange(-2, 4))


def test_auto_range_with_refit_false_keeps_the_penalized_model():
    X, y = _linear()
    sel = SoftRegSelectorCV(_StepPath(leave=(0.5, 1.0, 2.0, 4.0)), lambda_max="auto",
                            n_lambdas=6, lambda_min_ratio=1 / 32, cv=2, path_params={},
                            refit=False, dense_epochs=1, path_epochs=1).fit(X, y)
    assert isinstance(sel.estimator_, _StepPath)
    assert sel.estimator_.lambda_features == sel.best_lambda_
    assert sel.predict(X).shape == (len(X),)


def test_relaxed_scores_and_refit_use_lambda_features_zero():
    from sklearn.model_selection import KFold

    X, y = _linear()
    folds = list(KFold(2).split(X))
    # the user's lambda_features=3 would drop the first three inputs
    est = _StepPath(leave=(0.5, 1.0, 2.0, 4.0), lambda_features=3.0)
    sel = SoftRegSelectorCV(est, lambdas=[0.1, 0.2], cv=folds, path_params={}, relaxed=True,
                            dense_epochs=1, path_epochs=1).fit(X, y)
    for i, (train, test) in enumerate(folds):
        expected = LinearRegression().fit(X[train], y[train]).score(X[test], y[test])
        np.testing.assert_allclose(sel.cv_scores_[:, i], expected)
    assert sel.estimator_.lambda_features == 0.0
    np.testing.assert_array_equal(sel.estimator_.w_, np.ones(4))


def test_one_standard_error_rule():
    sel = SoftRegSelectorCV()
    best = np.array([1.0, 0.8, 0.6, 0.4])  # the best mean, 0.7
    se = best.std(ddof=1) / 2  # the folds' standard deviation over sqrt(4)
    scores = np.vstack([best] + [np.full(4, 0.7 - k * se) for k in (0.9, 1.1, 10.0)])
    assert sel._choose(scores) == 1  # the largest λ within one SE of the best mean
    assert clone(sel).set_params(selection="best")._choose(scores) == 0


def test_leaving_lambda_is_where_the_column_stays_zero():
    norms = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    lambdas = np.array([0.1, 0.2, 0.4, 0.8])
    out = SoftRegSelectorCV._leaving_lambdas(norms, lambdas)
    np.testing.assert_allclose(out, [0.8, 0.4])
    np.testing.assert_allclose(SoftRegSelectorCV._leaving_lambdas(norms[:3], lambdas[:3]),
                               [np.inf, 0.4])


def test_no_input_left_at_the_chosen_lambda_is_an_error():
    X, y = _linear(n_features=3)
    sel = SoftRegSelectorCV(_StepPath(leave=(0.05, 0.05, 0.05)), lambdas=[0.1, 0.2], cv=2,
                            path_params={}, relaxed=False, dense_epochs=1, path_epochs=1)
    with pytest.raises(ValueError, match="No input is left"):
        sel.fit(X, y)


def test_tags_follow_the_estimator():
    assert is_regressor(SoftRegSelectorCV())
    assert is_classifier(SoftRegSelectorCV(SoftRegCNNClassifier()))
    assert SoftRegSelectorCV().__sklearn_tags__().target_tags.required


def test_plot_selector_cv_draws_the_one_se_threshold_of_the_rule():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sk_softreg.plot import plot_selector_cv

    best = np.array([1.0, 0.8, 0.6, 0.4])
    se = best.std(ddof=1) / 2  # the folds' standard deviation over sqrt(4)
    sel = SoftRegSelectorCV(relaxed=False)
    sel.cv_scores_ = np.vstack([best] + [np.full(4, 0.7 - k * se) for k in (0.9, 1.1, 10.0)])
    sel.lambdas_ = np.array([0.01, 0.02, 0.04, 0.08])
    sel.n_features_path_ = np.array([4, 3, 2, 1])
    sel.n_features_in_ = 4
    sel.best_index_ = sel._choose(sel.cv_scores_)
    sel.best_lambda_ = float(sel.lambdas_[sel.best_index_])
    try:
        ax = plot_selector_cv(sel)
        dotted = [line for line in ax.lines if line.get_linestyle() == ":"]
        assert len(dotted) == 1
        np.testing.assert_allclose(dotted[0].get_ydata(), 0.7 - se)
    finally:
        plt.close("all")


@pytest.mark.parametrize("lambda_max, expected", [(2.0, [2.0]), ("auto", [0.3])])
def test_a_grid_of_one_lambda_is_lambda_max(lambda_max, expected):
    """As LassoCV's one-alpha grid; "auto" then goes on from there, past 0.3."""
    sel = SoftRegSelectorCV(n_lambdas=1, lambda_max=lambda_max)
    np.testing.assert_array_equal(sel._lambda_grid(), expected)
