"""Class labels at fit: classes kept under zero weights, skorch's ``classes`` in any order,
partial_fit's ``classes`` checked as scikit-learn checks them, and the validation scorer
on a DataFrame fit."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import make_regression
from sklearn.ensemble import VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from skorch.dataset import Dataset
from skorch.helper import predefined_split

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor
from sk_softreg._validation import label_indices

FAST = dict(max_epochs=2, batch_size=32, module__channels=(4, 8), module__hidden_units=16,
            random_state=0, device="cpu")


def clf(**kwargs):
    return SoftRegCNNClassifier(**{**FAST, **kwargs})


@pytest.fixture(scope="module")
def three_classes(small_digits):
    X, y = small_digits
    return X[:200], y[:200] % 3


# ----------------------------------------------------------------------------
# a class whose rows all weigh 0 stays a class, as in scikit-learn
@pytest.mark.parametrize("how", ["sample_weight", "class_weight"])
def test_a_class_of_weight_zero_keeps_its_place_in_classes(three_classes, how):
    X, y = three_classes
    if how == "sample_weight":
        est = clf().fit(X, y, sample_weight=(y != 2).astype(float))
        reference = LogisticRegression().fit(X, y, sample_weight=(y != 2).astype(float))
    else:
        est = clf(class_weight={2: 0.0}).fit(X, y)
        reference = LogisticRegression(class_weight={2: 0.0}).fit(X, y)
    np.testing.assert_array_equal(est.classes_, reference.classes_)
    proba = est.predict_proba(X)
    assert proba.shape == (len(y), 3)
    # no row of class 2 was trained on, so the network learns to give it little mass
    assert proba[:, 2].mean() < proba[:, :2].mean()


def test_soft_voting_with_weights_that_empty_a_class(three_classes):
    X, y = three_classes
    sw = (y != 2).astype(float)
    vote = VotingClassifier([("net", clf()), ("lr", LogisticRegression())], voting="soft")
    assert vote.fit(X, y, sample_weight=sw).predict_proba(X[:4]).shape == (4, 3)


def test_weights_that_drop_no_class_leave_the_fit_alone(three_classes):
    X, y = three_classes
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    w[:10] = 0.0
    dropped = clf().fit(X, y, sample_weight=w)
    by_hand = clf().fit(X[10:], y[10:], sample_weight=w[10:])
    np.testing.assert_array_equal(dropped.predict_proba(X), by_hand.predict_proba(X))


# ----------------------------------------------------------------------------
# skorch's classes parameter: its order is classes_'s order
def test_label_indices_take_classes_in_any_order():
    np.testing.assert_array_equal(label_indices([2, 0, 1], [0, 1, 2, 2]), [1, 2, 0, 0])
    np.testing.assert_array_equal(label_indices(["c", "a", "b"], ["a", "c"]), [1, 0])
    with pytest.raises(ValueError, match=r"y contains previously unseen labels: \[5\]"):
        label_indices([2, 0, 1], [0, 5])


@pytest.mark.parametrize("classes", [[2, 0, 1], ["b", "a", "c"]])
def test_unsorted_classes_parameter(small_digits, classes):
    X, y = small_digits
    easy = y < 3  # digits 0, 1 and 2: a network that learns the right labels fits them
    X, y = X[easy], y[easy]
    labels = y if isinstance(classes[0], int) else np.array(["a", "b", "c"])[y]
    est = clf(classes=classes, max_epochs=20).fit(X, labels)
    np.testing.assert_array_equal(est.classes_, classes)
    # column j of predict_proba is classes_[j], and predict follows it. Labels taken as
    # the wrong index (a sorted search in unsorted classes) permute every label: the
    # training accuracy would fall far below chance (1/3)
    proba = est.predict_proba(X)
    np.testing.assert_array_equal(est.predict(X), np.asarray(classes)[proba.argmax(axis=1)])
    assert est.score(X, labels) > 0.6


def test_unsorted_classes_parameter_on_a_dataset(three_classes):
    X, y = three_classes
    images = torch.tensor(X, dtype=torch.float32).reshape(-1, 1, 8, 8)
    dataset = torch.utils.data.TensorDataset(images, torch.tensor(y))
    est = clf(classes=[2, 0, 1]).fit(dataset)
    np.testing.assert_array_equal(est.classes_, [2, 0, 1])
    assert set(est.predict(dataset)) <= {0, 1, 2}


# ----------------------------------------------------------------------------
# partial_fit's classes, as scikit-learn's _check_partial_fit_first_call
def test_partial_fit_refuses_other_classes_than_the_first_calls(three_classes):
    X, y = three_classes
    est = clf(max_epochs=1).partial_fit(X, y, classes=[0, 1, 2])
    est.partial_fit(X, y, classes=[2, 1, 0])  # the same set, in another order
    est.partial_fit(X, y)
    with pytest.raises(ValueError, match=r"`classes=\[0, 1, 2, 3\]` is not the same as on last "
                                         r"call to partial_fit, was: array\(\[0, 1, 2\]\)"):
        est.partial_fit(X, y, classes=[0, 1, 2, 3])


def test_a_warm_start_fit_with_weights_keeps_its_classes(three_classes):
    X, y = three_classes
    est = clf(warm_start=True).fit(X, y)
    keep = y != 2
    est.fit(X[keep], y[keep], sample_weight=np.ones(keep.sum()))
    np.testing.assert_array_equal(est.classes_, [0, 1, 2])


# ----------------------------------------------------------------------------
# early stopping on a scorer, fitted on a DataFrame
@pytest.mark.parametrize("estimator", ["regressor", "classifier"])
def test_the_validation_scorer_does_not_warn_about_feature_names(small_digits, estimator):
    if estimator == "regressor":
        X, y = make_regression(n_samples=300, n_features=5, random_state=0)
        est = SoftRegRegressor(max_epochs=3, early_stopping=True, scoring="r2",
                               random_state=0, device="cpu")
    else:
        X, y = small_digits
        est = clf(max_epochs=3, early_stopping=True, scoring="accuracy")
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        est.fit(frame, y)
    assert len(est.history[:, "valid_score"]) == 3
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        est.predict(X[:3])  # the user's own call still warns, as scikit-learn's estimators do


def test_a_class_of_one_row_under_early_stopping_is_named_by_its_label(three_classes):
    """The stratified split needs two rows of each class; the error names the label,
    not the class index that the split sees."""
    X, y = three_classes
    labels = np.array(["cat", "dog", "zebra"])[y]
    labels[0] = "eel"
    with pytest.raises(ValueError, match=r"these classes have 1: \['eel'\]\. Pass early_stopping"):
        clf(early_stopping=True).fit(X, labels)
    assert clf(early_stopping=True, max_epochs=1).fit(X[1:], labels[1:]).n_iter_ == 1


# ----------------------------------------------------------------------------
# a validation set of the user's own holds the user's labels and units
def test_a_validation_set_of_ones_own_is_in_the_users_labels(small_digits):
    X, y = small_digits
    labels = y * 10 + 5  # labels that are not class indices
    X_img = X.reshape(-1, 1, 8, 8).astype(np.float32)
    for valid in (Dataset(X_img[200:], labels[200:]),  # a skorch Dataset: encoded at once
                  torch.utils.data.TensorDataset(torch.tensor(X_img[200:]),
                                                 torch.tensor(labels[200:]))):  # item by item
        est = clf(train_split=predefined_split(valid)).fit(X[:200], labels[:200])
        expected = log_loss(labels[200:], est.predict_proba(X[200:]), labels=est.classes_)
        assert est.history[-1, "valid_loss"] == pytest.approx(expected, rel=1e-4)


def test_a_validation_set_of_ones_own_is_in_ys_units():
    X, y = make_regression(n_samples=400, n_features=5, noise=10.0, random_state=0)
    X, y = X.astype(np.float32), 1000.0 + 50.0 * y  # y far from standardized
    kwargs = dict(alpha=0.1, max_epochs=15, module__hidden_units=(16,), random_state=0,
                  device="cpu")
    own = SoftRegRegressor(train_split=predefined_split(Dataset(X[300:], y[300:])),
                           early_stopping=True, scoring="r2", **kwargs).fit(X[:300], y[:300])
    plain = SoftRegRegressor(early_stopping=False, **kwargs).fit(X[:300], y[:300])
    # the validation loss is the standardized half squared error of these rows
    mean = own.predict(X[300:])
    z = (y[300:] - mean) / own.y_scale_[0]
    assert own.history[own.best_epoch_ - 1, "valid_score"] == pytest.approx(
        1 - np.sum((y[300:] - mean) ** 2) / np.sum((y[300:] - y[300:].mean()) ** 2), rel=1e-5)
    assert np.mean(z ** 2) < 2.0
    # the std's scale comes from standardized residuals, so it stays near the plain fit's
    ratio = own.predict(X[:5], return_std=True)[1] / plain.predict(X[:5], return_std=True)[1]
    assert np.all((ratio > 0.5) & (ratio < 2.0))
