"""Training faults: divergence, interruption, warm start and partial_fit."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Callback
from skorch.dataset import Dataset
from skorch.helper import predefined_split

from sk_softreg import NonFiniteLossError, SoftRegCNNClassifier, SoftRegRegressor

FAST = {"batch_size": 16, "device": "cpu", "random_state": 0}
TINY_CNN = {"module__channels": (4, 8), "module__hidden_units": 16}
_rng = np.random.RandomState(0)
X_IMG = _rng.rand(48, 16).astype(np.float32)
Y_CLS = np.arange(48) % 3
X_TAB = _rng.randn(48, 4)
Y_REG = X_TAB @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * _rng.randn(48)


@pytest.mark.parametrize(
    "est, X, y",
    [
        (SoftRegCNNClassifier(**TINY_CNN, optimizer=torch.optim.SGD, lr=1e6, max_epochs=5, **FAST), X_IMG, Y_CLS),
        (SoftRegRegressor(optimizer=torch.optim.SGD, lr=1e6, max_epochs=5, **FAST), X_TAB, Y_REG),
    ],
    ids=["classifier", "regressor"],
)
def test_non_finite_loss_stops_training_clearly(est, X, y):
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+, batch \d+.*smaller learning rate") as info:
        est.fit(X, y)
    assert isinstance(info.value, FloatingPointError)
    # training stopped at the reported batch: no further batches were run
    epoch, batch = (int(v) for v in __import__("re").findall(r"epoch (\d+), batch (\d+)", str(info.value))[0])
    assert len(est.history) == epoch
    assert len(est.history[-1, "batches"]) == batch
    assert not np.isfinite(est.history[-1, "batches", -1, "train_loss"])
    # never a fitted model that predicts NaN
    with pytest.raises(NotFittedError):
        est.predict(X)


def test_non_finite_validation_loss_stops_training_clearly():
    # NaN in the validation inputs: the training loss stays finite, the
    # validation loss does not; that must stop the fit as clearly.
    X_valid = X_TAB[:16].astype(np.float32).copy()
    X_valid[3, 1] = np.nan
    y_valid = Y_REG[:16].astype(np.float32).reshape(-1, 1)
    split = predefined_split(Dataset(X_valid, y_valid))
    est = SoftRegRegressor(max_epochs=3, train_split=split, **FAST)
    with pytest.raises(NonFiniteLossError, match=r"validation loss became nan at epoch 1, batch 1") as info:
        est.fit(X_TAB, Y_REG)
    assert "validation data" in str(info.value)
    assert len(est.history) == 1
    assert np.isfinite(est.history[-1, "batches", 0, "train_loss"])
    with pytest.raises(NotFittedError):
        est.predict(X_TAB)


def test_infinite_validation_loss_stops_training_clearly():
    # a huge (finite) validation input makes the squared error overflow to inf, not NaN:
    # inf stops too
    X_valid = X_TAB[:16].astype(np.float32).copy()
    X_valid[5, 0] = 1e30
    split = predefined_split(Dataset(X_valid, Y_REG[:16].astype(np.float32)))
    est = SoftRegRegressor(max_epochs=3, train_split=split, **FAST)
    with pytest.raises(NonFiniteLossError, match=r"validation loss became inf at epoch 1, batch 1"):
        est.fit(X_TAB, Y_REG)
    assert len(est.history) == 1


def test_an_infinite_validation_target_is_bad_input():
    """The targets of a validation set of the user's own are checked as fit's y is."""
    y_valid = Y_REG[:16].astype(np.float32).copy()
    y_valid[5] = np.inf
    split = predefined_split(Dataset(X_TAB[:16].astype(np.float32), y_valid))
    with pytest.raises(ValueError, match="Input y contains infinity"):
        SoftRegRegressor(max_epochs=3, train_split=split, **FAST).fit(X_TAB, Y_REG)


class _PoisonWeights(Callback):
    """Set a weight to NaN after the last optimizer step, keeping that batch's loss finite."""

    def __init__(self, index=0):
        self.index = index

    def on_batch_end(self, net, training=False, **kwargs):
        last_batch = len(net.history[-1, "batches"]) == 3  # 48 samples / batch_size 16
        if training and len(net.history) == net.max_epochs and last_batch:
            with torch.no_grad():
                next(net.module_.parameters()).view(-1)[self.index] = float("nan")


@pytest.mark.parametrize("index", [0, -1], ids=["first weight", "last weight"])
def test_non_finite_weights_after_last_batch_are_caught(index):
    est = SoftRegRegressor(max_epochs=2, callbacks=[_PoisonWeights(index)], **FAST)
    with pytest.raises(NonFiniteLossError, match="weights of 'module' became non-finite by the end of epoch 2"):
        est.fit(X_TAB, Y_REG)
    with pytest.raises(NotFittedError):
        est.predict(X_TAB)


def test_diverged_estimator_can_be_refit():
    est = SoftRegRegressor(optimizer=torch.optim.SGD, lr=1e6, max_epochs=3, **FAST)
    with pytest.raises(NonFiniteLossError):
        est.fit(X_TAB, Y_REG)
    est.set_params(lr=1e-2).fit(X_TAB, Y_REG)
    assert np.isfinite(est.predict(X_TAB)).all()


class _InterruptAt(Callback):
    def __init__(self, epoch=2):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "make, X, y",
    [
        (lambda **kw: SoftRegCNNClassifier(**TINY_CNN, **kw), X_IMG, Y_CLS),
        (lambda **kw: SoftRegRegressor(alpha=0.1, **kw), X_TAB, Y_REG),
    ],
    ids=["classifier", "regressor"],
)
def test_keyboard_interrupt_leaves_usable_model(make, X, y):
    est = make(max_epochs=4, callbacks=[("interrupt", _InterruptAt(2))], **FAST)
    est.fit(X, y)  # skorch swallows the KeyboardInterrupt
    assert len(est.history) == 2
    assert hasattr(est, "sparsity_")  # _after_fit ran
    pred = est.predict(X)
    assert pred.shape == (len(X),)
    if isinstance(est, SoftRegRegressor):
        assert np.isfinite(pred).all() and hasattr(est, "residual_std_")
        assert np.isfinite(est.predict(X, return_std=True)[1]).all()
    else:
        assert set(pred) <= set(est.classes_)
    # and training can go on from there
    est.partial_fit(X, y)  # the callback fires at epoch 2 only
    assert len(est.history) == 6


def _weights(est):
    return [p.detach().clone() for p in est.module_.parameters()]


def _params_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "est, X, y",
    [
        (SoftRegCNNClassifier(**TINY_CNN, max_epochs=2, **FAST), X_IMG, Y_CLS),
        (SoftRegRegressor(max_epochs=2, lambda1=1e-3, **FAST), X_TAB, Y_REG),
    ],
    ids=["classifier", "regressor"],
)
def test_warm_start_continues_from_fitted_state(est, X, y):
    est.fit(X, y)
    module, optimizer, before = est.module_, est.optimizer_, _weights(est)
    adam_steps = int(optimizer.state[next(module.parameters())]["step"])
    est.set_params(warm_start=True).fit(X, y)
    # same objects, trained further, history extended, Adam state kept
    assert est.module_ is module and est.optimizer_ is optimizer
    assert len(est.history) == 4
    assert int(optimizer.state[next(module.parameters())]["step"]) == 2 * adam_steps
    assert not _params_equal(before, _weights(est))
    # without warm_start a refit starts over (same seed -> same weights as the first fit)
    first = _weights(est.set_params(warm_start=False).fit(X, y))
    assert len(est.history) == 2
    assert _params_equal(first, before)


@pytest.mark.parametrize(
    "est, X, y",
    [
        (SoftRegCNNClassifier(**TINY_CNN, max_epochs=1, **FAST), X_IMG, Y_CLS),
        (SoftRegRegressor(max_epochs=1, **FAST), X_TAB, Y_REG),
    ],
    ids=["classifier", "regressor"],
)
def test_partial_fit_continues_from_fitted_state(est, X, y):
    est.fit(X, y)
    module, before = est.module_, _weights(est)
    for _ in range(3):
        est.partial_fit(X, y)
    assert est.module_ is module
    assert len(est.history) == 4
    assert not _params_equal(before, _weights(est))
    # the optimizer state carried over: Adam counted every step of all 4 epochs
    # (a re-initialized optimizer would count only the last epoch's steps)
    steps_per_epoch = -(-len(X) // FAST["batch_size"])
    first_param = next(est.module_.parameters())
    assert int(est.optimizer_.state[first_param]["step"]) == 4 * steps_per_epoch


def test_partial_fit_keeps_classes_from_first_call():
    est = SoftRegCNNClassifier(**TINY_CNN, max_epochs=1, **FAST)
    est.partial_fit(X_IMG[Y_CLS < 2], Y_CLS[Y_CLS < 2], classes=[0, 1, 2])
    est.partial_fit(X_IMG[Y_CLS == 2], Y_CLS[Y_CLS == 2])
    assert list(est.classes_) == [0, 1, 2]
    assert est.predict_proba(X_IMG).shape == (48, 3)
