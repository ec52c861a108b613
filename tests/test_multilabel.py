"""Multilabel targets of SoftRegCNNClassifier: an (n, L) indicator matrix of 0 and 1."""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV
from skorch.dataset import Dataset
from skorch.helper import predefined_split

import sk_softreg
from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor
from sk_softreg._batching import pack_weights
from sk_softreg._multilabel import balanced_pos_weight, subset_correct
from sk_softreg.penalties import bernoulli_kl_from_half, bernoulli_kl_to_half

TINY = dict(module__channels=(4, 8), module__hidden_units=16, max_epochs=2, random_state=0,
            device="cpu")


def clf(**kwargs):
    return SoftRegCNNClassifier(**{**TINY, **kwargs})


def three_labels(y):
    """Digits' three labels: even, at least 5, prime."""
    return np.c_[y % 2 == 0, y >= 5, np.isin(y, [2, 3, 5, 7])].astype(np.int64)


@pytest.fixture(scope="module")
def data(digits):
    X, y = digits
    return X[:240], three_labels(y[:240]), X[1500:1600], three_labels(y[1500:1600])


@pytest.fixture(scope="module")
def fitted(data):
    X, Y, _, _ = data
    return clf(alpha=0.1).fit(X, Y)


def _logits(est, X):
    with torch.no_grad():
        return est.module_.eval()(torch.as_tensor(X.reshape(-1, *est.input_shape_),
                                                  dtype=torch.float32))


# ----------------------------------------------------------------------
# scikit-learn's conventions
def test_probabilities_are_per_label_sigmoids(fitted, data):
    _, _, X_test, _ = data
    proba = fitted.predict_proba(X_test)
    assert proba.shape == (len(X_test), 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba, torch.sigmoid(_logits(fitted, X_test).double()).numpy(),
                               rtol=1e-6)
    # not renormalized: three labels can all be present or all absent
    assert not np.allclose(proba.sum(axis=1), 1.0)
    assert fitted.multilabel_ is True
    np.testing.assert_array_equal(fitted.classes_, np.arange(3))
    assert fitted.module_.classifier[-1].out_features == 3
    assert isinstance(fitted.criterion_, torch.nn.BCEWithLogitsLoss)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool, np.float64])
def test_predict_thresholds_at_one_half_in_the_dtype_of_y(data, dtype):
    X, Y, X_test, Y_test = data
    est = clf(max_epochs=1).fit(X, Y.astype(dtype))
    pred = est.predict(X_test)
    assert pred.dtype == np.dtype(dtype) and pred.shape == Y_test.shape
    np.testing.assert_array_equal(pred, (est.predict_proba(X_test) > 0.5).astype(dtype))
    assert est.score(X_test, Y_test.astype(dtype)) == accuracy_score(Y_test.astype(dtype), pred)


def test_list_frame_and_sparse_targets_train_alike(data):
    import pandas as pd

    X, Y, X_test, _ = data
    expected = clf(max_epochs=1).fit(X, Y).predict_proba(X_test)
    for target in (Y.tolist(), pd.DataFrame(Y, columns=list("abc")), sp.csr_matrix(Y)):
        np.testing.assert_array_equal(clf(max_epochs=1).fit(X, target).predict_proba(X_test),
                                      expected)


def test_grid_search_scores_multilabel_metrics(data):
    X, Y, _, _ = data
    scoring = ["f1_samples", "f1_macro", "jaccard_samples"]
    search = GridSearchCV(clf(max_epochs=1), {"alpha": [0.0, 0.1]}, cv=2, scoring=scoring,
                          refit="f1_samples").fit(X, Y)
    for name in scoring:
        scores = search.cv_results_[f"mean_test_{name}"]
        assert np.all((scores >= 0) & (scores <= 1)) and np.all(np.isfinite(scores))
    assert search.best_estimator_.multilabel_


# ----------------------------------------------------------------------
# the objective
def test_training_loss_is_mean_bce_plus_alpha_mean_bernoulli_kl(fitted):
    torch.manual_seed(0)
    logits = 3 * torch.randn(16, 3)
    Y = torch.randint(0, 2, (16, 3)).float()
    bce = F.binary_cross_entropy_with_logits(logits, Y)  # mean over rows and labels
    assert torch.allclose(fitted.get_loss(logits, Y, training=False), bce)
    for kl, term in (("label_smoothing", bernoulli_kl_from_half),
                     ("confidence_penalty", bernoulli_kl_to_half)):
        fitted.set_params(kl=kl)
        expected = bce + 0.1 * term(logits).mean()
        assert torch.allclose(fitted.get_loss(logits, Y, training=True), expected)
    fitted.set_params(kl="label_smoothing")


def test_sample_weights_weigh_rows_of_label_means(fitted):
    torch.manual_seed(1)
    logits, Y = torch.randn(8, 3), torch.randint(0, 2, (8, 3)).float()
    w = torch.arange(1.0, 9.0)
    X = pack_weights(torch.zeros(8, 1, 8, 8), w)
    per_row = F.binary_cross_entropy_with_logits(logits, Y, reduction="none").mean(dim=1)
    kl_row = bernoulli_kl_from_half(logits).mean(dim=1)
    expected = ((per_row + 0.1 * kl_row) * w).sum() / w.sum()
    assert torch.allclose(fitted.get_loss(logits, Y, X=X, training=True), expected)


def test_sample_weight_zero_rows_do_not_train(data):
    X, Y, X_test, _ = data
    w = np.ones(len(X))
    w[::3] = 0
    weighted = clf().fit(X, Y, sample_weight=w).predict_proba(X_test)
    np.testing.assert_array_equal(weighted, clf().fit(X[w > 0], Y[w > 0]).predict_proba(X_test))


def test_balanced_class_weight_is_a_pos_weight_on_the_data_loss_only(data):
    X, Y, _, _ = data
    est = clf(class_weight="balanced", alpha=0.1, max_epochs=1).fit(X, Y)
    positives = Y.sum(axis=0)
    np.testing.assert_allclose(est.pos_weight_, (len(Y) - positives) / positives)
    np.testing.assert_allclose(est.criterion_.pos_weight.numpy(), est.pos_weight_, rtol=1e-6)
    logits, target = torch.randn(6, 3), torch.as_tensor(Y[:6], dtype=torch.float32)
    pos_weight = torch.as_tensor(est.pos_weight_, dtype=torch.float32)
    expected = (F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
                + 0.1 * bernoulli_kl_from_half(logits).mean())  # KL unweighted
    assert torch.allclose(est.get_loss(logits, target, training=True), expected)


def test_balanced_pos_weight_counts_weights_and_caps_labels_without_positives():
    Y = np.array([[1, 0, 1], [0, 0, 1], [0, 0, 1], [1, 0, 0]])
    np.testing.assert_allclose(balanced_pos_weight(Y), [2 / 2, 4 / 1, 1 / 3])
    w = np.array([3.0, 1.0, 1.0, 1.0])
    # each count floored at one mean row (1.5): label 0 has 2 negatives, 4 positives;
    # label 1 no positives; label 2 one negative row of weight 1, 5 positives
    np.testing.assert_allclose(balanced_pos_weight(Y, w), [2 / 4, 6 / 1.5, 1.5 / 5])


def test_class_weight_dict_is_refused_for_multilabel_targets(data):
    X, Y, _, _ = data
    with pytest.raises(ValueError, match="class_weight as a dict is not supported for multilabel"):
        clf(class_weight={0: 2.0}).fit(X, Y)
    with pytest.raises(ValueError, match="'balanced' is not supported for partial_fit. For mult"):
        clf(class_weight="balanced").partial_fit(X, Y)


# ----------------------------------------------------------------------
# the rest of the package
def test_partial_fit_takes_range_of_labels_and_checks_them(data):
    X, Y, _, _ = data
    est = clf(max_epochs=1)
    est.partial_fit(X[:120], Y[:120], classes=[0, 1, 2]).partial_fit(X[120:], Y[120:])
    assert len(est.history) == 2 and est.multilabel_
    with pytest.raises(ValueError, match=r"Y has 2 labels \(columns\), but .* fitted on 3"):
        est.partial_fit(X, Y[:, :2])
    with pytest.raises(ValueError, match="fitted on a multilabel indicator matrix, but y is 1-D"):
        est.partial_fit(X, Y[:, 0])
    with pytest.raises(ValueError, match=r"classes must be range\(n_labels\) = range\(3\)"):
        clf().partial_fit(X, Y, classes=["a", "b", "c"])


def test_early_stopping_split_is_not_stratified(data):
    X, _, _, _ = data
    # 8 random labels: most combinations occur once, which a stratified split refuses
    # ("The least populated classes in y have only 1 member")
    Y = np.random.default_rng(0).integers(0, 2, size=(len(X), 8))
    est = clf(early_stopping=True, validation_fraction=0.25, max_epochs=3).fit(X, Y)
    assert est.history[-1, "valid_loss"] > 0
    assert 0 <= est.history[-1, "valid_acc"] <= 1


def test_valid_acc_is_subset_accuracy(data):
    X, Y, X_test, Y_test = data
    est = clf(train_split=predefined_split(Dataset(X_test.astype(np.float32).reshape(-1, 1, 8, 8),
                                                   Y_test.astype(np.float32)))).fit(X, Y)
    assert est.history[-1, "valid_acc"] == pytest.approx(est.score(X_test, Y_test))


def test_safe_format_and_pickle_round_trip(data, tmp_path):
    X, Y, X_test, _ = data
    est = clf(class_weight="balanced", max_epochs=1).fit(X, Y.astype(bool))
    est.save(tmp_path / "m.safetensors")
    for loaded in (sk_softreg.load(tmp_path / "m.safetensors"), pickle.loads(pickle.dumps(est))):
        np.testing.assert_array_equal(loaded.predict_proba(X_test), est.predict_proba(X_test))
        assert loaded.predict(X_test).dtype == bool
        np.testing.assert_array_equal(loaded.pos_weight_, est.pos_weight_)
        assert torch.equal(loaded.criterion_.pos_weight, est.criterion_.pos_weight)


def test_plot_history_draws_a_multilabel_fit(data):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sk_softreg.plot import plot_history

    X, Y, _, _ = data
    est = clf(alpha=0.1, early_stopping=True).fit(X, Y)
    ax = plot_history(est)
    assert {line.get_label() for line in ax.get_lines()} >= {"valid_loss"}
    plt.close("all")


def test_cli_predict_lists_the_labels_present(fitted, data, tmp_path, capsys):
    import joblib

    from sk_softreg.cli import main

    _, _, X_test, _ = data
    joblib.dump(fitted, tmp_path / "m.joblib")
    np.save(tmp_path / "x.npy", X_test[:6].reshape(-1, 1, 8, 8).astype(np.float32))
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m.joblib"), str(tmp_path / "x.npy")]) == 0
    rows = [line.split(",") for line in capsys.readouterr().out.strip().splitlines()]
    assert rows[0] == ["file", "label", "proba_0", "proba_1", "proba_2"]
    expected = [" ".join(str(j) for j in np.flatnonzero(r)) for r in fitted.predict(X_test[:6])]
    assert [row[1] for row in rows[1:]] == expected


def test_fast_path_and_dataloader_agree(data):
    X, Y, X_test, _ = data
    fast = clf(alpha=0.1).fit(X, Y).predict_proba(X_test)
    loader = clf(alpha=0.1, iterator_train__num_workers=0).fit(X, Y).predict_proba(X_test)
    np.testing.assert_allclose(fast, loader, rtol=1e-6)


# ----------------------------------------------------------------------
# bad input and the edges
@pytest.mark.parametrize("values", [(0, 2), (-1, 1), (0.0, 0.5)], ids=["02", "pm1", "half"])
def test_matrix_with_other_values_than_0_and_1_raises(data, values):
    X, Y, _, _ = data
    bad = np.where(Y == 1, values[1], values[0])
    with pytest.raises(ValueError, match="multilabel indicator matrix .* values 0 and 1"):
        clf().fit(X, bad)


def test_constant_label_warns_and_names_it(data):
    X, Y, _, _ = data
    Y = np.c_[Y, np.zeros(len(Y), dtype=Y.dtype)]
    with pytest.warns(UserWarning, match=r"Label\(s\) \[3\] of Y are constant"):
        clf(max_epochs=1).fit(X, Y)


def test_single_column_is_the_binary_target(data):
    X, Y, X_test, _ = data
    with pytest.warns(DataConversionWarning):
        est = clf(max_epochs=1).fit(X, Y[:, :1])
    assert not est.multilabel_
    assert est.predict(X_test).shape == (len(X_test),)
    assert est.predict_proba(X_test).shape == (len(X_test), 2)


def test_refit_on_class_labels_forgets_the_multilabel_state(data):
    X, Y, X_test, _ = data
    est = clf(class_weight="balanced", max_epochs=1).fit(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.fit(X, Y[:, 0])
    assert not est.multilabel_ and not hasattr(est, "pos_weight_")
    assert isinstance(est.criterion_, torch.nn.CrossEntropyLoss)
    np.testing.assert_allclose(est.predict_proba(X_test).sum(axis=1), 1.0)


def test_regressor_treats_a_0_1_matrix_as_a_2d_target(data):
    X, Y, X_test, _ = data
    reg = SoftRegRegressor(max_epochs=2, random_state=0, device="cpu").fit(X, Y)
    pred = reg.predict(X_test)
    assert pred.shape == (len(X_test), 3) and pred.dtype.kind == "f"
    assert not np.all(np.isin(pred, (0, 1)))


def test_subset_correct_needs_a_probability_above_one_half_for_a_present_label():
    # predict calls a label present where its probability exceeds 0.5: 0.5 itself is absent
    proba = np.array([[0.5, 0.9], [0.5, 0.9], [0.51, 0.1]])
    Y = np.array([[0, 1], [1, 1], [1, 0]])
    np.testing.assert_array_equal(subset_correct(proba, Y), [True, False, True])


def test_predict_leaves_labels_of_probability_one_half_absent(data):
    X, Y, X_test, _ = data
    est = clf(max_epochs=1).fit(X, Y)
    last = [m for m in est.module_.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # every logit exactly 0: every probability exactly 1/2
        last.weight.zero_()
        last.bias.zero_()
    np.testing.assert_array_equal(est.predict_proba(X_test[:4]), 0.5)
    np.testing.assert_array_equal(est.predict(X_test[:4]), np.zeros((4, 3)))


def test_refit_without_class_weight_drops_the_balanced_pos_weight(data):
    X, Y, _, _ = data
    est = clf(max_epochs=1, class_weight="balanced").fit(X, Y)
    assert est.criterion_.pos_weight is not None
    est.set_params(class_weight=None).fit(X, Y)
    assert not hasattr(est, "pos_weight_")
    assert est.criterion_.pos_weight is None


def test_balanced_class_weight_and_criterion_pos_weight_are_exclusive(data):
    X, Y, _, _ = data
    est = clf(max_epochs=1, class_weight="balanced", criterion__pos_weight=torch.ones(3))
    with pytest.raises(ValueError, match="not both"):
        est.fit(X, Y)


def test_probabilities_near_one_and_zero_are_not_rounded(data):
    # the sigmoid runs in float64: a logit of 20 gives 1 - 2.1e-9, which float32 rounds to 1
    X, Y, X_test, _ = data
    est = clf(max_epochs=1).fit(X, Y)
    last = [m for m in est.module_.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([20.0, -20.0, 0.0]))
    proba = est.predict_proba(X_test[:4])
    expected = 1 / (1 + np.exp(-np.array([20.0, -20.0, 0.0])))
    np.testing.assert_allclose(proba, np.tile(expected, (4, 1)), rtol=1e-12)
    assert (proba[:, 0] < 1).all() and (proba[:, 1] > 0).all()


def test_balanced_pos_weight_of_a_weighted_fit_counts_the_sample_weights(data):
    X, Y, _, _ = data
    w = np.where(Y[:, 0] == 1, 3.0, 1.0)  # the first label's positives weigh three rows
    est = clf(class_weight="balanced", max_epochs=1).fit(X, Y, sample_weight=w)
    np.testing.assert_allclose(est.pos_weight_, balanced_pos_weight(Y, w), rtol=1e-12)
    positives = (w * Y[:, 0]).sum()
    assert est.pos_weight_[0] == pytest.approx((w.sum() - positives) / positives)
    assert not np.allclose(est.pos_weight_, balanced_pos_weight(Y))


# ----------------------------------------------------------------------
# target forms and refits (found by a bug hunt against scikit-learn's behaviour)
def test_a_refit_on_a_label_matrix_of_the_wrong_length_leaves_the_model_alone(data, digits):
    X, Y, _, _ = data
    y = digits[1][:240]
    est = clf().fit(X, y)
    before = est.predict_proba(X[:5])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(X, Y[:100])
    np.testing.assert_array_equal(est.classes_, np.unique(y))
    assert not est.multilabel_
    np.testing.assert_array_equal(est.predict_proba(X[:5]), before)


def test_a_coo_label_matrix_with_weights_of_zero(data):
    X, Y, _, _ = data
    w = np.r_[0.0, np.ones(len(Y) - 1)]
    from_coo = clf().fit(X, sp.coo_matrix(Y), sample_weight=w)
    dense = clf().fit(X, Y, sample_weight=w)
    np.testing.assert_array_equal(from_coo.predict_proba(X), dense.predict_proba(X))


@pytest.mark.parametrize("dtype", ["boolean", "Int64"])
def test_a_frame_of_pandas_nullable_dtypes_is_a_label_matrix(data, dtype):
    """Converted as scikit-learn's check_array converts them (to float64)."""
    pd = pytest.importorskip("pandas")
    X, Y, _, _ = data
    frame = pd.DataFrame(Y, columns=["even", "big", "prime"]).astype(dtype)
    est = clf().fit(X, frame)
    np.testing.assert_array_equal(est.predict_proba(X), clf().fit(X, Y).predict_proba(X))
    assert est.predict(X[:3]).dtype == np.float64
