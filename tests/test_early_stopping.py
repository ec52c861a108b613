"""early_stopping / validation_fraction / n_iter_no_change / tol, n_iter_ and best_epoch_."""

import numpy as np
import pytest
from sklearn.datasets import make_regression
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback, EarlyStopping
from skorch.dataset import ValidSplit

import sk_softreg
from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor

TINY_CNN = dict(module__channels=(4, 8), module__hidden_units=16)


class ValidSizes(Callback):
    """Records the size of the validation set at every epoch (None without one)."""

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.valid_sizes = []

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self.valid_sizes.append(None if dataset_valid is None else len(dataset_valid))


@pytest.fixture(scope="module")
def noisy():
    """Few noisy rows and a wide net without dropout: the validation loss turns up early."""
    X, y = make_regression(n_samples=120, n_features=20, n_informative=5, noise=40.0, random_state=0)
    return X, y


def reg(**kwargs):
    params = dict(max_epochs=60, lr=1e-2, batch_size=16, module__dropout=0.0,
                  module__hidden_units=(128,), random_state=0, device="cpu")
    return SoftRegRegressor(**{**params, **kwargs})


def test_stops_after_n_iter_no_change_and_restores_the_best_epoch(noisy):
    X, y = noisy
    est = reg(early_stopping=True, n_iter_no_change=4, validation_fraction=0.2).fit(X, y)
    valid_loss = np.array(est.history[:, "valid_loss"])
    assert est.n_iter_ == len(valid_loss) < 60  # it stopped early
    assert est.n_iter_ == est.best_epoch_ + 4
    # the best epoch: no later epoch improved on it by more than tol
    assert valid_loss[est.best_epoch_:].min() > valid_loss[est.best_epoch_ - 1] - est.tol
    # the weights are those of the best epoch: the same split and seed, trained
    # for best_epoch_ epochs without stopping, give the same predictions
    same_split = ValidSplit(0.2, random_state=0)
    best = reg(train_split=same_split, max_epochs=est.best_epoch_).fit(X, y)
    np.testing.assert_array_equal(est.predict(X), best.predict(X))
    assert not np.array_equal(est.predict(X), reg(train_split=same_split, max_epochs=est.n_iter_).fit(X, y).predict(X))


def test_parameters_stay_as_given_and_build_skorch_callbacks(noisy):
    X, y = noisy
    est = reg(early_stopping=True, n_iter_no_change=3, tol=0.5, max_epochs=5)
    before = est.get_params(deep=False)
    est.fit(X, y)
    after = est.get_params(deep=False)
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)
    assert est.callbacks is None and est.train_split is None
    stopper = dict(est.callbacks_)["early_stopping"]
    assert isinstance(stopper, EarlyStopping)
    assert (stopper.monitor, stopper.patience, stopper.threshold, stopper.threshold_mode, stopper.load_best) == (
        "valid_loss", 3, 0.5, "abs", True)


def test_without_early_stopping_every_epoch_runs(noisy):
    X, y = noisy
    est = reg(max_epochs=3, early_stopping=False, callbacks=[("sizes", ValidSizes())]).fit(X, y)
    assert est.n_iter_ == est.best_epoch_ == 3
    assert dict(est.callbacks_)["sizes"].valid_sizes == [None] * 3
    assert "early_stopping" not in dict(est.callbacks_)
    # the regressor's default "auto" keeps its callback idle on 120 rows (12 held out < 30)
    auto = reg(max_epochs=3, callbacks=[("sizes", ValidSizes())]).fit(X, y)
    assert auto.n_iter_ == auto.best_epoch_ == 3
    assert dict(auto.callbacks_)["sizes"].valid_sizes == [None] * 3


def test_classifier_holds_out_a_stratified_seeded_fraction(digits):
    X, y = digits
    X, y = X[:300], y[:300]
    kw = dict(early_stopping=True, validation_fraction=0.2, max_epochs=2, random_state=0, device="cpu", **TINY_CNN)
    est = SoftRegCNNClassifier(**kw, callbacks=[("sizes", ValidSizes())]).fit(X, y)
    assert dict(est.callbacks_)["sizes"].valid_sizes == [60, 60]
    # stratified and seeded like ValidSplit(0.2, stratified=True, random_state=0)
    same = SoftRegCNNClassifier(**{**kw, "early_stopping": False},
                                train_split=ValidSplit(0.2, stratified=True, random_state=0)).fit(X, y)
    assert est.history[:, "valid_loss"] == same.history[:, "valid_loss"]
    other_seed = SoftRegCNNClassifier(**{**kw, "random_state": 1}).fit(X, y)
    assert other_seed.history[:, "valid_loss"] != est.history[:, "valid_loss"]


def test_own_train_split_is_used_and_validation_fraction_ignored(noisy):
    X, y = noisy
    est = reg(early_stopping=True, validation_fraction=0.1, max_epochs=2,
              train_split=ValidSplit(0.5, random_state=0), callbacks=[("sizes", ValidSizes())]).fit(X, y)
    assert dict(est.callbacks_)["sizes"].valid_sizes == [60, 60]


def test_partial_fit_refuses_early_stopping(noisy):
    X, y = noisy
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        reg(early_stopping=True).partial_fit(X, y)


def test_too_small_validation_set_raises(noisy):
    X, y = noisy
    with pytest.raises(ValueError, match="The validation set is too small"):
        reg(early_stopping=True, validation_fraction=0.01).fit(X[:50], y[:50])


@pytest.mark.parametrize(
    "params, name",
    [
        ({"validation_fraction": 0.0}, "validation_fraction"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"n_iter_no_change": 0}, "n_iter_no_change"),
        ({"n_iter_no_change": 2.5}, "n_iter_no_change"),
        ({"tol": -1e-3}, "tol"),
        ({"tol": float("inf")}, "tol"),
        ({"early_stopping": "yes"}, "early_stopping"),
    ],
)
def test_bad_parameters_raise(noisy, params, name):
    X, y = noisy
    with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of SoftRegRegressor"):
        reg(**params).fit(X, y)


def test_save_and_load_keep_the_new_parameters_and_attributes(noisy, tmp_path, digits):
    X, y = noisy
    est = reg(early_stopping=True, n_iter_no_change=2, tol=0.01, validation_fraction=0.25).fit(X, y)
    est.save(tmp_path / "reg.safetensors")
    loaded = sk_softreg.load(tmp_path / "reg.safetensors")
    for name in ("early_stopping", "n_iter_no_change", "tol", "validation_fraction"):
        assert loaded.get_params()[name] == est.get_params()[name]
    assert (loaded.n_iter_, loaded.best_epoch_) == (est.n_iter_, est.best_epoch_)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))

    Xd, yd = digits
    clf = SoftRegCNNClassifier(class_weight={0: 2.0, 9: 0.5}, max_epochs=1, random_state=0,
                               device="cpu", **TINY_CNN).fit(Xd[:100], yd[:100])
    clf.save(tmp_path / "clf.safetensors")
    assert sk_softreg.load(tmp_path / "clf.safetensors").class_weight == {0: 2.0, 9: 0.5}


@pytest.mark.parametrize("labels", [np.array([3, 5, 7]), np.array(["cat", "dog", "owl"])])
def test_valid_acc_scores_any_labels(labels):
    """skorch's valid_acc compared predicted labels with class indices: labels other
    than 0..K-1 scored 0 (or, as strings, raised). It scores the indices now."""
    rng = np.random.RandomState(0)
    k = np.arange(150) % 3
    X = (rng.rand(150, 1, 4, 4) * 0.2 + k[:, None, None, None] / 2).astype(np.float32)
    est = SoftRegCNNClassifier(max_epochs=15, early_stopping=True, validation_fraction=0.2,
                               n_iter_no_change=20, random_state=0, device="cpu")
    est.fit(X, labels[k])
    assert est.history[-1, "valid_acc"] > 0.9


# ----------------------------------------------------------------------
# scoring: what early stopping watches
def three_blobs(labels, n=150, seed=0):
    rng = np.random.RandomState(seed)
    k = np.arange(n) % 3
    X = (rng.rand(n, 1, 4, 4) * 0.6 + k[:, None, None, None] / 4).astype(np.float32)
    return X, labels[k]


class Recorder:
    """A scorer callable that records what it was given and returns a constant."""

    def __init__(self, value=0.5):
        self.value, self.calls = value, []

    def __call__(self, estimator, X, y, sample_weight=None):
        self.calls.append((estimator, len(X), np.array(y), sample_weight))
        return self.value


def test_score_stops_on_valid_score_in_the_users_labels():
    X, y = three_blobs(np.array(["cat", "dog", "owl"]))
    X_valid, y_valid = three_blobs(np.array(["cat", "dog", "owl"]), n=60, seed=1)
    from skorch.dataset import Dataset
    from skorch.helper import predefined_split

    valid = Dataset(X_valid, y_valid)  # the user's labels, as for fit
    est = SoftRegCNNClassifier(max_epochs=30, early_stopping=True, n_iter_no_change=3,
                               scoring="accuracy", train_split=predefined_split(valid),
                               random_state=0, device="cpu").fit(X, y)
    scores = np.array(est.history[:, "valid_score"])
    assert len(scores) == est.n_iter_
    assert scores[est.best_epoch_ - 1] == scores.max()
    # the best epoch's score is the accuracy of the restored weights on the validation rows
    assert scores[est.best_epoch_ - 1] == pytest.approx(est.score(X_valid, y_valid))
    assert est.n_iter_ == 30 or est.n_iter_ == np.argmax(scores) + 1 + 3


def test_a_constant_score_stops_after_the_patience():
    X, y = three_blobs(np.arange(3))
    scorer = Recorder()
    est = SoftRegCNNClassifier(max_epochs=20, early_stopping=True, n_iter_no_change=2,
                               scoring=scorer, random_state=0, device="cpu").fit(X, y)
    assert est.n_iter_ == 3 and est.best_epoch_ == 1  # no later epoch improved by tol
    assert len(scorer.calls) == 3 and all(c[0] is est for c in scorer.calls)
    n_valid, labels, weights = scorer.calls[0][1:]
    assert n_valid == 15 and set(labels) <= {0, 1, 2} and weights is None
    assert "valid_score" not in est.set_params(scoring="loss").fit(X, y).history[-1]


def test_validation_score_keeps_no_validation_data_after_fit():
    """The valid_score callback drops its copy of the validation rows when training ends
    (a pickled estimator carries no validation data)."""
    X, y = three_blobs(np.arange(3))
    est = SoftRegCNNClassifier(max_epochs=2, early_stopping=True, scoring=Recorder(),
                               random_state=0, device="cpu").fit(X, y)
    assert "valid_score" in est.history[-1]
    assert dict(est.callbacks_)["valid_score"].data_ is None


def test_weighted_fit_passes_the_validation_weights_to_the_scorer():
    X, y = three_blobs(np.arange(3))
    w = 1.0 + np.arange(len(y)) / len(y)
    scorer = Recorder()
    SoftRegCNNClassifier(max_epochs=2, early_stopping=True, scoring=scorer, random_state=0,
                         device="cpu").fit(X, y, sample_weight=w)
    weights = scorer.calls[0][3]  # the rows' weights, divided by the largest (as fit does)
    assert weights is not None and len(weights) == 15
    assert np.isclose(weights[:, None] * w.max(), w[None, :], rtol=1e-6).any(axis=1).all()


def test_regressor_scorer_gets_y_in_its_units(noisy):
    X, y = noisy
    scorer = Recorder()
    reg(early_stopping=True, scoring=scorer, max_epochs=3, validation_fraction=0.25).fit(X, y)
    received = scorer.calls[0][2]
    assert received.shape == (30,) and np.isin(received.round(4), y.round(4)).all()
    r2 = reg(early_stopping=True, scoring="r2", max_epochs=5, validation_fraction=0.25).fit(X, y)
    assert np.isfinite(r2.history[:, "valid_score"]).all()


def test_unknown_scoring_raises_sklearns_error(noisy):
    X, y = noisy
    with pytest.raises(InvalidParameterError, match="'scoring' parameter of SoftRegRegressor"):
        reg(early_stopping=True, scoring="no_such_score").fit(X, y)


def test_scoring_does_not_change_the_training_run(digits):
    """Predicting for the scorer draws from torch's RNG (a DataLoader's seed); under a
    forked RNG, the weights and losses are those of a fit that watches the loss."""
    X, y = digits[0][:300], digits[1][:300]
    kw = dict(early_stopping=True, n_iter_no_change=50, max_epochs=3, random_state=0,
              device="cpu", **TINY_CNN)
    on_loss = SoftRegCNNClassifier(**kw).fit(X, y)
    on_accuracy = SoftRegCNNClassifier(scoring="accuracy", **kw).fit(X, y)
    assert on_accuracy.history[:, "valid_loss"] == on_loss.history[:, "valid_loss"]
    assert on_accuracy.history[:, "valid_score"] == on_accuracy.history[:, "valid_acc"]


def test_multilabel_scorer_gets_the_indicators():
    rng = np.random.RandomState(0)
    X = rng.rand(100, 8, 8).astype(np.float32)
    Y = (rng.rand(100, 4) < 0.4).astype(np.int64)
    scorer = Recorder()
    SoftRegCNNClassifier(max_epochs=2, early_stopping=True, scoring=scorer, random_state=0,
                         device="cpu", **TINY_CNN).fit(X, Y)
    received = scorer.calls[0][2]
    assert received.shape == (10, 4) and received.dtype == np.int64
    assert {tuple(row) for row in received} <= {tuple(row) for row in Y}


def test_scorer_is_not_called_where_auto_early_stopping_is_off(noisy):
    """early_stopping="auto" on small data: a train_split's validation set gets its
    valid_loss, but no scorer call and no valid_score (ValidationScore stays idle)."""
    X, y = noisy  # 120 rows: 12 would be held out, fewer than 30
    scorer = Recorder()
    est = reg(scoring=scorer, max_epochs=3, train_split=ValidSplit(0.5, random_state=0)).fit(X, y)
    assert "valid_loss" in est.history[-1] and "valid_score" not in est.history[-1]
    assert scorer.calls == [] and est.n_iter_ == 3


def _stop_of(curve, tol, patience, lower_is_better=True):
    """(epochs run, best epoch) of the rule: an epoch counts as progress where it beats the
    last progress epoch's score by more than ``tol`` (absolute), and the fit stops after
    ``patience`` epochs without progress."""
    sign = 1.0 if lower_is_better else -1.0
    threshold, best, misses = np.inf, 0, 0
    for epoch, score in enumerate(sign * np.asarray(curve), start=1):
        if score < threshold:
            threshold, best, misses = score - tol, epoch, 0
        else:
            misses += 1
            if misses == patience:
                return epoch, best
    return len(curve), best


@pytest.mark.parametrize("scoring, tol", [("loss", 0.02), ("r2", 0.05)])
def test_tol_is_the_least_absolute_improvement_that_counts(noisy, scoring, tol):
    """``tol`` in the score's own units: the stop and the restored epoch follow the rule
    on the curve of a fit that never stops (the same split and seed train the same way)."""
    X, y = noisy
    kwargs = dict(early_stopping=True, validation_fraction=0.2, scoring=scoring, max_epochs=40)
    full = reg(n_iter_no_change=40, tol=0.0, **kwargs).fit(X, y)
    key = "valid_loss" if scoring == "loss" else "valid_score"
    curve = full.history[:, key]
    expected = _stop_of(curve, tol, patience=3, lower_is_better=scoring == "loss")
    assert expected != _stop_of(curve, 0.0, patience=3, lower_is_better=scoring == "loss")
    est = reg(n_iter_no_change=3, tol=tol, **kwargs).fit(X, y)
    assert (est.n_iter_, est.best_epoch_) == expected
