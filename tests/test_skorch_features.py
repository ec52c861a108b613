"""skorch features a user brings, each as plain skorch behaves (found by a bug hunt):
scoring callbacks on train and with weights, samplers, predict_nonlinearity, and scoring
callbacks that see the user's labels and units."""

import numpy as np
import pytest
import torch
from _user_module import UserMeans
from sklearn.metrics import accuracy_score, r2_score
from skorch.callbacks import BatchScoring, Callback, EpochScoring
from skorch.dataset import ValidSplit
from skorch.utils import to_numpy
from torch import nn
from torch.utils.data import WeightedRandomSampler

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor

rng = np.random.RandomState(0)
X = rng.randn(200, 5).astype(np.float32)
Y = 100.0 + 10.0 * (X @ rng.randn(5))  # far from standardized
X_IMG = rng.rand(120, 1, 8, 8).astype(np.float32)
LABELS = np.array([3, 5, 7])[rng.randint(0, 3, 120)]  # not class indices


def reg(**kwargs):
    return SoftRegRegressor(**{"module__hidden_units": (16,), "max_epochs": 3,
                               "early_stopping": False, "random_state": 0, "device": "cpu",
                               **kwargs})


def clf(**kwargs):
    tiny = {} if "module" in kwargs else {"module__channels": (4, 8), "module__hidden_units": 16}
    return SoftRegCNNClassifier(**{**tiny, "max_epochs": 3, "random_state": 0, "device": "cpu",
                                   **kwargs})


@pytest.mark.parametrize("callback", [EpochScoring("r2", on_train=True, name="r2_train"),
                                      BatchScoring("r2", on_train=True, name="r2_train")])
def test_on_train_scoring_of_the_regressor(callback):
    """The cached training outputs carry gradients; predict detaches them."""
    est = reg(callbacks=[callback]).fit(X, Y)
    assert np.all(np.isfinite(est.history[:, "r2_train"]))


@pytest.mark.parametrize("make", [reg, clf])
def test_uncached_scoring_of_a_weighted_fit(make):
    """skorch hands predict the validation rows as the weighted fit packed them."""
    X_, y_ = (X, Y) if make is reg else (X_IMG, LABELS)
    scoring = "r2" if make is reg else "accuracy"
    est = make(train_split=ValidSplit(5),
               callbacks=[EpochScoring(scoring, use_caching=False, name="s")])
    est.fit(X_, y_, sample_weight=rng.rand(len(y_)) + 0.5)
    assert np.all(np.isfinite(est.history[:, "s"]))


def test_a_sampler_of_ones_own_orders_the_training_rows():
    sampler = WeightedRandomSampler(np.r_[np.ones(60), np.zeros(60)], 120)  # first half only
    seen = []

    class Recording(nn.Module):
        def __init__(self, input_shape=(1, 8, 8), n_classes=3):
            super().__init__()
            self.lin = nn.Linear(64, n_classes)

        def forward(self, X):
            if self.training:
                seen.append(X.detach().reshape(len(X), -1).clone())
            return self.lin(X.flatten(1))

    clf(module=Recording, iterator_train__sampler=sampler, max_epochs=1).fit(X_IMG, LABELS)
    rows = torch.cat(seen).numpy()
    first_half = X_IMG[:60].reshape(60, -1)
    assert all((np.abs(first_half - row).sum(axis=1) == 0).any() for row in rows)


def test_predict_follows_a_predict_nonlinearity_of_ones_own():
    class Shifted(nn.Module):
        def __init__(self, input_shape=(1, 8, 8), n_classes=3):
            super().__init__()
            self.lin = nn.Linear(64, n_classes)

        def forward(self, X):
            return self.lin(X.flatten(1)) - 5.0  # negative outputs

    est = clf(module=Shifted, predict_nonlinearity=None, max_epochs=1).fit(X_IMG, LABELS)
    raw = est.forward(X_IMG).numpy()
    np.testing.assert_allclose(est.predict_proba(X_IMG), raw, rtol=1e-6)  # as skorch's
    np.testing.assert_array_equal(est.predict(X_IMG), est.classes_[raw.argmax(axis=1)])


@pytest.mark.parametrize("cached", [True, False])
def test_a_scoring_callback_sees_ys_units(cached):
    est = reg(train_split=ValidSplit(5), max_epochs=2,
              callbacks=[EpochScoring("r2", name="valid_r2", use_caching=cached)]).fit(X, Y)
    _, valid = est.get_split_datasets(X, Y)
    rows = np.asarray(valid.indices)
    assert est.history[-1, "valid_r2"] == pytest.approx(
        r2_score(Y[rows], est.predict(X[rows])), rel=1e-5)


def test_a_scoring_callback_sees_the_users_labels():
    est = clf(train_split=ValidSplit(5), max_epochs=2,
              callbacks=[EpochScoring("accuracy", name="valid_accuracy"),
                         BatchScoring("accuracy", on_train=True, name="train_accuracy")])
    est.fit(X_IMG, LABELS)
    assert est.history[:, "valid_accuracy"] == est.history[:, "valid_acc"]
    _, valid = est.get_split_datasets(X_IMG, LABELS)
    rows = np.asarray(valid.indices)
    assert est.history[-1, "valid_accuracy"] == pytest.approx(
        accuracy_score(LABELS[rows], est.predict(X_IMG[rows])))
    assert 0 < est.history[-1, "train_accuracy"]  # not 0: labels 3, 5, 7 against indices
    # after the fit the callbacks hold skorch's extractor again (clone, pickle, get_params)
    callbacks = [cb for _, cb in est.callbacks_ if isinstance(cb, (EpochScoring, BatchScoring))]
    assert all(cb.target_extractor is to_numpy for cb in callbacks)


def test_early_stopping_restores_the_variance_of_a_means_only_module():
    """A module that returns means only learns its log-variance in log_var_; restoring
    the best epoch restores it too (skorch's EarlyStopping keeps module_ alone)."""
    class Record(Callback):
        def on_train_begin(self, net, **kwargs):
            self.log_vars = []

        def on_epoch_end(self, net, **kwargs):
            self.log_vars.append(net.log_var_.log_var.detach().clone())

    record = Record()
    X4 = rng.randn(400, 5).astype(np.float32)
    y4 = X4 @ rng.randn(5) + 0.5 * rng.randn(400)
    est = SoftRegRegressor(UserMeans, alpha=0.5, early_stopping=True, n_iter_no_change=3, lr=0.05,
                           max_epochs=40, random_state=0, device="cpu",
                           callbacks=[("record", record)]).fit(X4, y4)
    assert est.best_epoch_ < est.n_iter_  # it stopped after its best epoch
    torch.testing.assert_close(est.log_var_.log_var, record.log_vars[est.best_epoch_ - 1])
    assert not torch.equal(est.log_var_.log_var, record.log_vars[-1])


def test_the_penalties_follow_freezer_and_unfreezer():
    """Weights a callback freezes after the first epoch stay where they are under λ1 and
    λ2; weights it unfreezes are penalized from then on."""
    from skorch.callbacks import Freezer, Unfreezer

    class Snapshot(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 2:
                self.weight = net.module_.body[0].weight.detach().clone()

    snapshot = Snapshot()
    kwargs = dict(module__hidden_units=(16,), max_epochs=5, early_stopping=False,
                  random_state=0, device="cpu")
    frozen = SoftRegRegressor(lambda1=0.05, lambda2=0.1, **kwargs,
                              callbacks=[Freezer("body.0.weight", at=3), snapshot]).fit(X, Y)
    torch.testing.assert_close(frozen.module_.body[0].weight, snapshot.weight, rtol=0, atol=0)
    thawed = SoftRegRegressor(lambda1=0.5, **kwargs, callbacks=[
        Freezer("body.0.weight"), Unfreezer("body.0.weight", at=3)]).fit(X, Y)
    assert (thawed.module_.body[0].weight == 0).float().mean() > 0.3  # the prox reached it
    # and counted in train_l1 from the epoch it trains in
    assert thawed.history[2, "train_l1"] > 2 * thawed.history[1, "train_l1"]


def test_initialize_before_fit_then_load_params(tmp_path):
    """skorch's initialize() + load_params workflow on a fresh net, with a module whose
    arguments are given: the weights load; predicting still needs a fit (or
    sk_softreg.load), whose fitted attributes load_params does not restore."""
    from sklearn.exceptions import NotFittedError

    class Means(nn.Module):
        def __init__(self, n_in=5):
            super().__init__()
            self.lin = nn.Linear(n_in, 1)

        def forward(self, X):
            return self.lin(X)

    fitted = SoftRegRegressor(module=Means, module__n_in=5, max_epochs=2, random_state=0,
                              device="cpu").fit(X, Y)
    fitted.save_params(f_params=tmp_path / "params.pt")
    fresh = SoftRegRegressor(module=Means, module__n_in=5, device="cpu").initialize()
    fresh.load_params(f_params=tmp_path / "params.pt")
    torch.testing.assert_close(fresh.module_.lin.weight, fitted.module_.lin.weight)
    assert isinstance(SoftRegCNNClassifier(device="cpu").initialize().module_, nn.Module)
    with pytest.raises(NotFittedError):
        fresh.predict(X)
