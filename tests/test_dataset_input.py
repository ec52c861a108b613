"""Lazy data: a torch Dataset of (x, y) pairs, and GridSearchCV through SliceDataset (both estimators)."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from skorch.helper import SliceDataset

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor

SMALL = {
    "max_epochs": 2,
    "batch_size": 32,
    "module__channels": (4, 8),
    "module__hidden_units": 16,
    "random_state": 0,
    "device": "cpu",
}


class DigitsImages(torch.utils.data.Dataset):
    """Digits served one (1, 8, 8) float32 image at a time, as a lazy loader would."""

    def __init__(self, X, y):
        self.X, self.y = X, y
        self.reads = 0

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        self.reads += 1
        return torch.from_numpy(self.X[i].reshape(1, 8, 8)), self.y[i]


def test_dataset_fit_matches_arrays(digits200):
    X, y = digits200
    arrays = SoftRegCNNClassifier(lambda1=1e-3, **SMALL).fit(X, y)
    lazy = SoftRegCNNClassifier(lambda1=1e-3, **SMALL).fit(DigitsImages(X, y))
    assert lazy.input_shape_ == (1, 8, 8)
    assert lazy.n_features_in_ == 64
    np.testing.assert_array_equal(lazy.classes_, np.arange(10))
    np.testing.assert_array_equal(lazy.predict_proba(X), arrays.predict_proba(X))
    # predicting on a Dataset works too
    np.testing.assert_array_equal(lazy.predict(DigitsImages(X, y)), arrays.predict(X))


def test_dataset_with_workers_and_string_labels(digits200):
    X, y = digits200
    labels = np.array([f"digit{d}" for d in y])
    clf = SoftRegCNNClassifier(
        **SMALL, iterator_train__num_workers=2, iterator_valid__num_workers=0
    ).fit(DigitsImages(X, labels))
    assert set(clf.classes_) == set(labels)
    assert set(clf.predict(X[:20])) <= set(labels)


def test_classes_param_avoids_scanning_the_dataset(digits200):
    X, y = digits200
    data = DigitsImages(X, y)
    SoftRegCNNClassifier(classes=list(range(10)), **dict(SMALL, max_epochs=1)).fit(data)
    # one epoch reads every sample once, plus the first sample for its shape
    assert data.reads == len(X) + 1


def test_empty_classes_param_infers_the_dataset_labels(digits200):
    X, y = digits200
    clf = SoftRegCNNClassifier(classes=[], **dict(SMALL, max_epochs=1)).fit(DigitsImages(X, y + 10))
    assert clf.classes_.tolist() == list(range(10, 20))
    assert set(clf.predict(X[:20])) <= set(range(10, 20))


def test_dataset_with_bad_samples_is_rejected(digits200):
    X, y = digits200
    flat = [(torch.from_numpy(x), t) for x, t in zip(X, y)]

    class Flat(torch.utils.data.Dataset):
        def __len__(self):
            return len(flat)

        def __getitem__(self, i):
            return flat[i]

    with pytest.raises(
        ValueError, match=r"\(C, H, W\) tensors; the first sample has shape \(64,\)"
    ):
        SoftRegCNNClassifier(**SMALL).fit(Flat())


@pytest.mark.parametrize("y_kind", ["array", "slice"])
def test_grid_search_on_slice_dataset(digits200, y_kind):
    X, y = digits200
    data = DigitsImages(X, y)
    X_sl = SliceDataset(data, idx=0)
    y_sl = y if y_kind == "array" else SliceDataset(data, idx=1)
    grid = {"lambda1": [0.0, 1e-3]}
    search = GridSearchCV(SoftRegCNNClassifier(**SMALL), grid, cv=StratifiedKFold(2))
    search.fit(X_sl, y_sl)
    reference = GridSearchCV(SoftRegCNNClassifier(**SMALL), grid, cv=StratifiedKFold(2))
    reference.fit(X.reshape(-1, 1, 8, 8), y)
    np.testing.assert_array_equal(
        search.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"]
    )
    assert search.best_estimator_.predict(X_sl[:5]).shape == (5,)


_ORDER = [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]


class NamedDigits(DigitsImages):
    """Targets index into an unsorted ``classes`` list, as in torchvision's datasets."""

    classes = [f"digit {d}" for d in _ORDER]

    def __init__(self, X, y):
        super().__init__(X, np.argsort(_ORDER)[y])


def test_dataset_class_names_become_classes_without_a_scan(digits200):
    X, y = digits200
    arrays = SoftRegCNNClassifier(**dict(SMALL, max_epochs=1)).fit(X, y)
    data = NamedDigits(X, y)
    named = SoftRegCNNClassifier(**dict(SMALL, max_epochs=1)).fit(data)
    assert data.reads == len(X) + 1  # one epoch and the first sample: labels were not scanned
    assert named.classes_.tolist() == [f"digit {d}" for d in range(10)]
    np.testing.assert_array_equal(named.predict_proba(X), arrays.predict_proba(X))
    assert named.predict(X).tolist() == [f"digit {d}" for d in arrays.predict(X)]
    named.partial_fit(NamedDigits(X, y))  # later calls map the targets the same way


class Rows(torch.utils.data.Dataset):
    """Tabular rows served one (n_features,) float32 tensor at a time, with their targets."""

    def __init__(self, X, y):
        self.X, self.y = X.astype(np.float32), y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return torch.from_numpy(self.X[i]), self.y[i]


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_regressor_dataset_fit_matches_arrays(alpha):
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:120], np.c_[y[:120], y[:120] ** 0.5]
    params = {"alpha": alpha, "lambda1": 1e-3, "max_epochs": 3, "random_state": 0, "device": "cpu"}
    arrays = SoftRegRegressor(**params).fit(X, y)
    lazy = SoftRegRegressor(**params).fit(Rows(X, y))
    assert lazy.n_features_in_ == 10 and lazy.n_outputs_ == 2
    np.testing.assert_allclose(lazy.y_mean_, arrays.y_mean_)
    for a, b in zip(lazy.predict(X, return_std=True), arrays.predict(X, return_std=True)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(lazy.predict(Rows(X, y)), arrays.predict(X), rtol=1e-6)
    # a SliceDataset with the targets as y: what cross-validation needs
    sliced = SoftRegRegressor(**params).fit(SliceDataset(Rows(X, y), idx=0), y)
    np.testing.assert_allclose(sliced.predict(X), arrays.predict(X), rtol=1e-6)


def test_regressor_dataset_with_bad_samples_is_rejected():
    X, y = load_diabetes(return_X_y=True)
    with pytest.raises(ValueError, match=r"1-D feature tensors; the first sample has shape \(2, 5\)"):
        SoftRegRegressor().fit(Rows(X[:20].reshape(20, 2, 5), y[:20]))
    fitted = SoftRegRegressor(max_epochs=1, device="cpu").fit(Rows(X[:20], y[:20]))
    with pytest.raises(ValueError, match="X has 5 features, but SoftRegRegressor is expecting 10"):
        fitted.partial_fit(Rows(X[:20, :5], y[:20]))


SMALL_REG = {"max_epochs": 1, "random_state": 0, "device": "cpu"}


class Scalars(torch.utils.data.Dataset):
    """Samples without a shape (python floats), not the 1-D tensors the regressor takes."""

    def __len__(self):
        return 20

    def __getitem__(self, i):
        return float(i), float(i)


class WideDigits(DigitsImages):
    """The digits served as (1, 4, 16) images."""

    def __getitem__(self, i):
        x, target = super().__getitem__(i)
        return x.reshape(1, 4, 16), target


@pytest.mark.parametrize("case", [
    "clf-slice-X-without-y", "reg-slice-X-without-y", "reg-shapeless-samples", "clf-image-shape",
    "clf-multilabel-y", "clf-length-mismatch", "clf-continuous-y",
])
def test_bad_dataset_input_is_rejected(digits200, case):
    X, y = digits200
    images = SliceDataset(DigitsImages(X, y), idx=0)
    without_y = "got a SliceDataset X without y; pass the targets as y"
    call, match = {
        "clf-slice-X-without-y": (lambda: SoftRegCNNClassifier(**SMALL).fit(images), without_y),
        "reg-slice-X-without-y": (
            lambda: SoftRegRegressor(**SMALL_REG).fit(SliceDataset(Rows(X, y), idx=0)), without_y),
        "reg-shapeless-samples": (lambda: SoftRegRegressor(**SMALL_REG).fit(Scalars()),
                                  r"1-D feature tensors; the first sample is a builtins\.float"),
        "clf-image-shape": (
            lambda: SoftRegCNNClassifier(image_shape=(4, 16), **SMALL).fit(DigitsImages(X, y)),
            r"image_shape=\(4, 16\) does not match the shape of the images in X"),
        "clf-multilabel-y": (
            lambda: SoftRegCNNClassifier(**SMALL).fit(images, np.c_[y % 2, y > 4]),
            "multilabel targets only for in-memory X"),
        "clf-length-mismatch": (lambda: SoftRegCNNClassifier(**SMALL).fit(images, y[:-1]),
                                r"inconsistent numbers of samples: \[200, 199\]"),
        "clf-continuous-y": (lambda: SoftRegCNNClassifier(**SMALL).fit(images, y + 0.5),
                             "Unknown label type: continuous"),
    }[case]
    with pytest.raises(ValueError, match=match):
        call()


def test_dataset_partial_fit_checks_image_shape_and_labels(digits200):
    """Later Datasets must hold images of the fitted shape and only labels seen at fit
    (here 0, 2, ..., 18: served through the label-to-index mapping)."""
    X, y = digits200
    clf = SoftRegCNNClassifier(**dict(SMALL, max_epochs=1)).fit(DigitsImages(X, 2 * y))
    assert clf.classes_.tolist() == list(range(0, 20, 2))
    with pytest.raises(ValueError, match=r"images of shape \(1, 4, 16\), but SoftRegCNNClassifier "
                       r"was fitted on images of shape \(1, 8, 8\)"):
        clf.partial_fit(WideDigits(X, 2 * y))
    for unseen in (5, 19):  # between two classes, above the last one
        labels = 2 * y
        labels[7] = unseen
        with pytest.raises(ValueError, match=rf"previously unseen labels: \[{unseen}\]$"):
            clf.partial_fit(DigitsImages(X, labels))


class NumberedDigits(DigitsImages):
    """A ``classes`` attribute that is not a list of names: the targets are the labels."""

    classes = list(range(10, 20))


def test_dataset_classes_that_are_not_names_are_not_an_index(digits200):
    X, y = digits200
    clf = SoftRegCNNClassifier(**dict(SMALL, max_epochs=1)).fit(NumberedDigits(X, y + 10))
    assert clf.classes_.tolist() == list(range(10, 20))
    assert set(clf.predict(X)) <= set(range(10, 20))
