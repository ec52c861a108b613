"""Smoke tests of sk_softreg.plot on the Agg backend."""

import sys

import numpy as np
import pytest
from sklearn.datasets import make_regression
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.dataset import ValidSplit

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor, SoftRegSelectorCV
from sk_softreg import plot as softreg_plot

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data():
    return make_regression(n_samples=80, n_features=5, noise=1.0, random_state=0)


def _regressor(**params):
    params = {"max_epochs": 3, "random_state": 0, "device": "cpu", **params}
    return SoftRegRegressor(**params)


def test_plot_history_draws_data_loss_terms_and_valid_loss(data):
    X, y = data
    reg = _regressor(lambda1=1e-3, lambda2=1e-3, alpha=0.1,
                     train_split=ValidSplit(4)).fit(X, y)
    _, ax = plt.subplots()
    out = softreg_plot.plot_history(reg, ax=ax)
    assert out is ax
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0] == "data loss"
    assert any("L1" in label for label in labels)
    assert any("L2" in label for label in labels)
    assert any("KL" in label for label in labels)
    assert "valid_loss" in labels
    # data loss + terms reconstructs skorch's train_loss
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    total = sum(values for label, values in lines.items() if label != "valid_loss")
    np.testing.assert_allclose(total, reg.history_[:, "train_loss"], rtol=1e-5)
    assert len(lines["data loss"]) == 3


def test_plot_history_without_penalties_draws_only_the_data_loss(data):
    X, y = data
    reg = _regressor().fit(X, y)
    ax = softreg_plot.plot_history(make_pipeline(StandardScaler(), reg).fit(X, y))
    assert [line.get_label() for line in ax.get_lines()] == ["data loss"]


def test_plot_history_unfitted_raises():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        softreg_plot.plot_history(_regressor())


@pytest.mark.parametrize("plot", ["plot_history", "plot_weight_histogram"])
def test_plots_of_a_fitted_search_draw_its_refit(data, plot):
    """A fitted search (here over a Pipeline) is plotted through its refit, the
    ``best_estimator_``; a search without one, or another kind of estimator, gets a
    TypeError that says what the function takes."""
    from sklearn.linear_model import Ridge

    X, y = data
    search = GridSearchCV(make_pipeline(StandardScaler(), _regressor(lambda1=1e-2)),
                          {"softregregressor__alpha": [0.0, 0.1]}, cv=2).fit(X, y)
    draw = getattr(softreg_plot, plot)
    from_search = draw(search)
    from_refit = draw(search.best_estimator_)
    for a, b in zip(from_search.get_lines(), from_refit.get_lines(), strict=True):
        np.testing.assert_array_equal(a.get_ydata(), b.get_ydata())
    assert [p.get_height() for p in from_search.patches] == \
        [p.get_height() for p in from_refit.patches]
    assert from_search.get_lines() or from_search.patches
    no_refit = GridSearchCV(_regressor(), {"alpha": [0.0, 0.1]}, cv=2, refit=False).fit(X, y)
    with pytest.raises(TypeError, match=f"{plot} takes a fitted .*refit=False"):
        draw(no_refit)
    with pytest.raises(TypeError, match="got Ridge"):
        draw(Ridge().fit(X, y))


@pytest.mark.parametrize("plot, takes", [
    ("plot_regularization_path", "takes a fitted search"),
    ("plot_selector_cv", "takes a fitted SoftRegSelectorCV"),
])
def test_plots_of_a_search_say_what_they_take_for_a_fitted_estimator(data, plot, takes):
    """A fitted estimator of another kind gets a TypeError, not "not fitted yet"."""
    X, y = data
    draw = getattr(softreg_plot, plot)
    with pytest.raises(TypeError, match=f"{takes}.*; got SoftRegRegressor"):
        draw(_regressor().fit(X, y))
    unfitted = (GridSearchCV(_regressor(), {"alpha": [0.0]}) if plot == "plot_regularization_path"
                else SoftRegSelectorCV(_regressor()))
    with pytest.raises(NotFittedError):
        draw(unfitted)


def test_plot_weight_histogram_counts_exact_zeros(data):
    X, y = data
    reg = _regressor(lambda1=0.05, max_epochs=5).fit(X, y)
    assert reg.sparsity_ > 0
    _, ax = plt.subplots()
    assert softreg_plot.plot_weight_histogram(reg, ax=ax, bins=10) is ax
    zero_bar = [c for c in ax.containers if "exact zeros" in c.get_label()]
    assert len(zero_bar) == 1
    # at alpha=0 the log-variance head is untrained (left out of sparsity_ and of the plot)
    n_weights = sum(p.numel() for name, p in reg.module_.named_parameters()
                    if p.ndim > 1 and not name.startswith("log_var."))
    height = zero_bar[0].patches[0].get_height()
    assert height == pytest.approx(reg.sparsity_ * n_weights)


def test_plot_weight_histogram_on_classifier():
    rng = np.random.RandomState(0)
    X = rng.rand(40, 64).astype(np.float32)
    y = np.arange(40) % 2
    clf = SoftRegCNNClassifier(lambda1=1e-3, max_epochs=1, random_state=0, device="cpu",
                               module__channels=(4, 4), module__hidden_units=8).fit(X, y)
    assert clf.sparsity_ > 0
    ax = softreg_plot.plot_weight_histogram(clf, log=True)
    assert ax.get_yscale() == "log"
    # every penalized weight (conv and linear kernels) is drawn once: the
    # zeros in their own bar, the others in the histogram
    n_weights = sum(p.numel() for p in clf.module_.parameters() if p.ndim > 1)
    (zero_bar,) = [c for c in ax.containers if "exact zeros" in c.get_label()]
    n_zero = zero_bar.patches[0].get_height()
    assert n_zero == pytest.approx(clf.sparsity_ * n_weights)
    n_hist = sum(patch.get_height() for patch in ax.patches if patch not in zero_bar.patches)
    assert n_zero + n_hist == n_weights


def _search(X, y, scoring, grid=None):
    grid = grid or {"softregregressor__lambda1": [0.0, 1e-3, 3e-2]}
    pipe = make_pipeline(StandardScaler(), _regressor())
    return GridSearchCV(pipe, grid, cv=2, scoring=scoring,
                        refit="r2" if isinstance(scoring, dict) else True).fit(X, y)


def test_plot_regularization_path_with_sparsity(data):
    X, y = data
    search = _search(X, y, {"r2": "r2", "sparsity": softreg_plot.sparsity_scorer})
    _, ax = plt.subplots()
    out = softreg_plot.plot_regularization_path(search, "lambda1", ax=ax)
    assert out is ax
    assert ax.get_xscale() == "symlog"  # 0 is in the grid
    assert ax.sparsity_ax is not None
    x, sparsity = ax.sparsity_ax.get_lines()[0].get_data()
    np.testing.assert_array_equal(x, [0.0, 1e-3, 3e-2])
    np.testing.assert_allclose(sparsity, search.cv_results_["mean_test_sparsity"])
    assert sparsity[-1] > sparsity[0]  # the strongest L1 zeroes more weights
    score_x, score_y = ax.get_lines()[0].get_data()
    np.testing.assert_allclose(score_y, search.cv_results_["mean_test_r2"])


def test_plot_regularization_path_without_sparsity_warns_and_uses_log_axis(data):
    X, y = data
    search = _search(X, y, None, {"softregregressor__lambda1": [1e-4, 1e-3]})
    with pytest.warns(UserWarning, match="sparsity_scorer"):
        ax = softreg_plot.plot_regularization_path(search)
    assert ax.get_xscale() == "log"
    assert ax.sparsity_ax is None


def test_plot_regularization_path_slices_through_best_candidate(data):
    X, y = data
    grid = {"softregregressor__lambda2": [0.0, 1e-3, 1e-2],
            "softregregressor__alpha": [0.0, 0.1]}
    search = _search(X, y, None, grid)
    ax = softreg_plot.plot_regularization_path(search, "lambda2")
    x, _ = ax.get_lines()[0].get_data()
    assert len(x) == 3


def test_plot_regularization_path_unknown_param(data):
    X, y = data
    search = _search(X, y, None, {"softregregressor__lambda1": [1e-4, 1e-3]})
    with pytest.raises(ValueError, match="No searched parameter matches 'tau'"):
        softreg_plot.plot_regularization_path(search, "tau")


def test_sparsity_scorer_rejects_estimators_without_sparsity():
    with pytest.raises(ValueError, match="sparsity_"):
        softreg_plot.sparsity_scorer(StandardScaler())


def test_missing_matplotlib_names_the_extra(monkeypatch, data):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    X, y = data
    reg = _regressor(max_epochs=1).fit(X, y)
    with pytest.raises(ImportError, match=r"pip install sk-softreg\[plot\]"):
        softreg_plot.plot_history(reg)
