"""What sk_softreg.plot draws, value by value, on the Agg backend.

test_plot.py checks that each plot runs on real fits; these tests feed the
plot functions small hand-made results (a search's ``cv_results_``, fitted
selection paths, a selector's scores) and check the numbers, scales and
errors they produce.
"""

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator

from sk_softreg import SoftRegCNNClassifier, SoftRegSelectorCV
from sk_softreg import plot as softreg_plot

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


class _Search(BaseEstimator):
    """A fitted search as the plots read it: cv_results_, refit and maybe best_index_."""

    def __init__(self, results, best_index=None, refit=True):
        self.cv_results_ = {k: np.asarray(v) if not k.startswith("param") else v
                            for k, v in results.items()}
        self.refit = refit
        if best_index is not None:
            self.best_index_ = best_index

    def fit(self, X=None, y=None):
        return self


def _results(lambdas, mean, std=None, **columns):
    lambdas = list(lambdas)
    std = np.zeros(len(lambdas)) if std is None else std
    res = {"param_lambda1": np.ma.masked_array(lambdas, dtype=object),
           "params": [{"lambda1": v} for v in lambdas],
           "mean_test_score": mean, "std_test_score": std}
    res.update(columns)
    return res


def _band(collection):
    """Lower and upper edge of a fill_between band, per x (sorted)."""
    vertices = collection.get_paths()[0].vertices
    xs = np.unique(vertices[:, 0])
    lower = [vertices[vertices[:, 0] == x, 1].min() for x in xs]
    upper = [vertices[vertices[:, 0] == x, 1].max() for x in xs]
    return xs, np.array(lower), np.array(upper)


# ----------------------------------------------------------------------
# plot_history
def _history_fit(**params):
    rng = np.random.RandomState(0)
    X = rng.rand(40, 64).astype(np.float32)
    return SoftRegCNNClassifier(lambda1=1e-3, max_epochs=2, random_state=0, device="cpu",
                                module__channels=(4, 4), module__hidden_units=8,
                                **params).fit(X, np.arange(40) % 2)


def test_history_axis_is_logarithmic_only_while_every_value_is_positive():
    clf = _history_fit()
    assert softreg_plot.plot_history(clf).get_yscale() == "log"
    # an epoch whose L1 term is 0: that curve is not positive, so the axis is linear
    row = list.__getitem__(clf.history_, 0)
    row["train_loss"] -= row["train_l1"]
    row["train_l1"] = 0.0
    ax = softreg_plot.plot_history(clf)
    assert [line.get_label() for line in ax.get_lines()][0] == "data loss"
    assert ax.get_yscale() == "linear"


def test_history_draws_valid_loss_only_when_every_epoch_has_one():
    from skorch.dataset import ValidSplit

    clf = _history_fit(train_split=ValidSplit(4))
    assert "valid_loss" in [line.get_label() for line in softreg_plot.plot_history(clf).lines]
    del list.__getitem__(clf.history_, -1)["valid_loss"]  # an epoch without validation
    ax = softreg_plot.plot_history(clf)
    assert "valid_loss" not in [line.get_label() for line in ax.get_lines()]


# ----------------------------------------------------------------------
# plot_regularization_path
def test_regularization_path_sorts_an_unsorted_grid():
    search = _Search(_results([1e-2, 0.0, 1e-3], [0.3, 0.9, 0.6], [0.05, 0.01, 0.02]),
                     best_index=1)
    with pytest.warns(UserWarning, match="sparsity"):
        ax = softreg_plot.plot_regularization_path(search)
    x, y = ax.get_lines()[0].get_data()
    np.testing.assert_array_equal(x, [0.0, 1e-3, 1e-2])
    np.testing.assert_array_equal(y, [0.9, 0.6, 0.3])
    # the band is one standard deviation over the folds
    xs, lower, upper = _band(ax.collections[0])
    np.testing.assert_array_equal(xs, [0.0, 1e-3, 1e-2])
    np.testing.assert_allclose(lower, [0.89, 0.58, 0.25])
    np.testing.assert_allclose(upper, [0.91, 0.62, 0.35])


def test_a_grid_with_zero_uses_symlog_up_to_the_smallest_positive_value():
    search = _Search(_results([0.0, 1e-4, 1e-2], [0.5, 0.6, 0.4]), best_index=1)
    with pytest.warns(UserWarning, match="sparsity"):
        ax = softreg_plot.plot_regularization_path(search)
    assert ax.get_xscale() == "symlog"
    assert ax.xaxis.get_transform().linthresh == 1e-4
    assert ax.get_xlim()[0] == 0.0
    assert ax.get_xlabel() == "lambda1 (symlog axis; 0 = no penalty)"


def test_a_positive_grid_uses_a_log_axis_named_by_the_parameter():
    search = _Search(_results([1e-4, 1e-2], [0.5, 0.6]), best_index=1)
    with pytest.warns(UserWarning, match="sparsity"):
        ax = softreg_plot.plot_regularization_path(search)
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "lambda1"


def test_a_grid_of_zero_only_uses_a_linear_axis():
    search = _Search(_results([0.0], [0.5]), best_index=0)
    with pytest.warns(UserWarning, match="sparsity"):
        ax = softreg_plot.plot_regularization_path(search)
    assert ax.get_xscale() == "linear"


def test_negative_parameter_values_are_refused():
    search = _Search(_results([-1e-3, 1e-3], [0.5, 0.6]), best_index=1)
    with pytest.raises(ValueError, match="finite and non-negative"):
        softreg_plot.plot_regularization_path(search)


def test_a_parameter_matching_several_searched_names_is_refused():
    res = _results([1e-3, 1e-2], [0.5, 0.6])
    res["param_b__lambda1"] = res.pop("param_lambda1")
    res["param_a__lambda1"] = np.ma.masked_array([0.0, 0.0], dtype=object)
    with pytest.raises(ValueError, match="More than one searched parameter matches 'lambda1'"):
        softreg_plot.plot_regularization_path(_Search(res, best_index=1))


def test_an_unknown_score_name_is_refused():
    search = _Search(_results([1e-3, 1e-2], [0.5, 0.6]), best_index=1)
    with pytest.raises(ValueError, match=r"score='r2' is not in cv_results_.*\['score'\]"):
        softreg_plot.plot_regularization_path(search, score="r2")


def test_without_a_refit_the_path_slices_through_the_best_mean():
    # lambda1 x alpha; the best mean is at alpha=0.1, so that row is drawn
    res = _results([0.0, 1e-3, 0.0, 1e-3], [0.5, 0.6, 0.7, 0.8])
    res["param_alpha"] = np.ma.masked_array([0.0, 0.0, 0.1, 0.1], dtype=object)
    with pytest.warns(UserWarning, match="sparsity"):
        ax = softreg_plot.plot_regularization_path(_Search(res, refit=False))
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [0.7, 0.8])


def test_the_sparsity_score_itself_gets_no_sparsity_axis():
    res = _results([0.0, 1e-3], [0.5, 0.6])
    res = {k.replace("_score", "_sparsity"): v for k, v in res.items()}
    ax = softreg_plot.plot_regularization_path(_Search(res, best_index=1, refit="sparsity"))
    assert ax.sparsity_ax is None
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [0.5, 0.6])


def test_the_sparsity_axis_spans_every_fraction():
    res = _results([0.0, 1e-3], [0.5, 0.6], mean_test_sparsity=[0.0, 0.4])
    ax = softreg_plot.plot_regularization_path(_Search(res, best_index=1))
    np.testing.assert_array_equal(ax.sparsity_ax.get_lines()[0].get_ydata(), [0.0, 0.4])
    assert ax.sparsity_ax.get_ylim() == (-0.02, 1.02)


# ----------------------------------------------------------------------
# plot_selection_path
class _Fit(BaseEstimator):
    """A fitted feature-selection estimator as plot_selection_path reads it."""

    def __init__(self, lambda_features, importances, names=None):
        self.lambda_features = lambda_features
        self.feature_importances_ = np.asarray(importances, dtype=float)
        self.n_features_selected_ = int(np.count_nonzero(self.feature_importances_))
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)

    def fit(self, X=None, y=None):
        return self


def test_selection_path_orders_counts_and_importances_by_lambda():
    fits = [_Fit(0.1, [0.0, 1.0, 0.0], names=["a", "b", "c"]),
            _Fit(0.0, [0.2, 0.5, 0.3], names=["a", "b", "c"]),
            _Fit(0.01, [0.4, 0.6, 0.0], names=["a", "b", "c"])]
    ax = softreg_plot.plot_selection_path(fits, highlight=[0])
    x, kept = ax.get_lines()[0].get_data()
    np.testing.assert_array_equal(x, [0.0, 0.01, 0.1])
    np.testing.assert_array_equal(kept, [3, 2, 1])
    (highlighted,) = [line for line in ax.importance_ax.get_lines()
                      if line.get_label() == "importance of a"]  # names of the DataFrame
    np.testing.assert_array_equal(highlighted.get_ydata(), [0.2, 0.4, 0.0])
    assert ax.get_ylim() == (0.0, 3.5)


@pytest.mark.parametrize("call, error, says", [
    (lambda: softreg_plot.plot_selection_path(_Fit(0.1, [0.5, 0.5])), TypeError,
     "got one _Fit: pass"),
    (lambda: softreg_plot.plot_selection_path([_Fit(0.1, [0.5, 0.5])], highlight=[2]),
     ValueError, r"highlight names inputs \[2\], but the fits have 2 inputs"),
    (lambda: softreg_plot.plot_selection_path([_Fit(0.1, [1.0]), _Fit(0.0, [0.5, 0.5])]),
     ValueError, r"these have \[1, 2\] input features"),
])
def test_selection_path_says_what_is_wrong_with_its_input(call, error, says):
    with pytest.raises(error, match=says):
        call()


# ----------------------------------------------------------------------
# plot_selector_cv
def _selector(scores, lambdas, best_lambda):
    sel = SoftRegSelectorCV(relaxed=False)
    sel.cv_scores_ = np.asarray(scores, dtype=float)
    sel.lambdas_ = np.asarray(lambdas, dtype=float)
    sel.n_features_path_ = np.arange(len(lambdas))[::-1] + 1
    sel.n_features_in_ = len(lambdas)
    sel.best_lambda_ = best_lambda
    return sel


def test_selector_cv_draws_means_over_the_folds_it_has_and_one_se_bands():
    scores = [[0.9, 0.7, np.nan], [0.5, 0.6, 0.7], [0.2, 0.4, 0.3]]
    ax = softreg_plot.plot_selector_cv(_selector(scores, [0.01, 0.1, 1.0], best_lambda=0.1))
    mean = np.nanmean(scores, axis=1)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), mean)
    se = np.nanstd(scores, axis=1, ddof=1) / np.sqrt(3)
    _, lower, upper = _band(ax.collections[0])
    np.testing.assert_allclose(lower, mean - se)
    np.testing.assert_allclose(upper, mean + se)
    # the chosen lambda (here the 1-SE rule's, not the best mean's) is the vertical line
    (chosen,) = [line for line in ax.lines if line.get_label().startswith("chosen")]
    assert list(chosen.get_xdata()) == [0.1, 0.1]
    assert ax.count_ax.get_ylim() == (0.0, 3.5)


# ----------------------------------------------------------------------
# plot_weight_histogram
@pytest.fixture(scope="module")
def classifier():
    rng = np.random.RandomState(0)
    X = rng.rand(40, 64).astype(np.float32)
    return SoftRegCNNClassifier(lambda1=1e-3, max_epochs=1, random_state=0, device="cpu",
                                module__channels=(4, 4), module__hidden_units=8).fit(
        X, np.arange(40) % 2)


def test_weight_histogram_counts_only_exact_zeros(classifier):
    weight = classifier._sparsity_params()[0]
    saved = weight.detach().clone()
    n_weights = sum(p.numel() for p in classifier._sparsity_params())
    try:
        with torch.no_grad():
            weight.zero_()
            weight.view(-1)[0] = 1e-12  # tiny, not zero
        n_zero = sum(int((p == 0).sum()) for p in classifier._sparsity_params())
        ax = softreg_plot.plot_weight_histogram(classifier, bins=5)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    (zero_bar,) = [c for c in ax.containers if "exact zeros" in c.get_label()]
    assert zero_bar.get_label() == (
        f"exact zeros: {n_zero} of {n_weights} ({n_zero / n_weights:.1%})")
    assert zero_bar.patches[0].get_height() == n_zero
    # the zeros' bar is as wide as a bin of the histogram
    bins = [p for p in ax.patches if p not in zero_bar.patches]
    assert zero_bar.patches[0].get_width() == pytest.approx(bins[0].get_width())


def test_weight_histogram_without_penalized_weights_raises(classifier, monkeypatch):
    monkeypatch.setattr(classifier, "_sparsity_params", lambda: [])
    with pytest.raises(ValueError, match="no penalized weights"):
        softreg_plot.plot_weight_histogram(classifier)
