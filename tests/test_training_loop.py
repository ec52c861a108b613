"""The estimators train in skorch's own loop: its hooks, history, zero_grad and closure."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import make_regression
from skorch.callbacks import Callback, EpochScoring
from skorch.dataset import ValidSplit
from skorch.history import History
from torch.optim.optimizer import register_optimizer_step_pre_hook

from sk_softreg import SoftRegRegressor
from sk_softreg._fast_loop import BatchHistory, hook_calls


class HookLog(Callback):
    """Logs every per-batch hook it receives, and checks the gradients it is shown."""

    def initialize(self):
        self.calls = []
        return self

    def on_batch_begin(self, net, batch=None, training=None, **kwargs):
        self.calls.append(("begin", training, len(batch[0])))

    def on_grad_computed(self, net, named_parameters, **kwargs):
        grads = [p.grad for _, p in named_parameters]
        assert grads and all(g is not None for g in grads)
        self.calls.append(("grad",))

    def on_batch_end(self, net, batch=None, training=None, loss=None, **kwargs):
        self.calls.append(("end", training, loss.item()))


class Silent(Callback):
    """Inherits every batch hook from skorch's Callback."""


def _data():
    X, y = make_regression(n_samples=150, n_features=5, noise=1.0, random_state=0)
    return X.astype(np.float32), y.astype(np.float32)


def _fit(**kwargs):
    """A seeded, penalized fit with a validation split and logging callbacks."""
    log = HookLog()
    per_instance = Silent()
    per_instance.on_batch_end = lambda net, **kw: log.calls.append(("instance",))
    params = dict(
        lambda1=1e-3, lambda2=1e-3, alpha=0.1, max_epochs=3, batch_size=32, random_state=0,
        train_split=ValidSplit(0.2, random_state=0), early_stopping=False,
        callbacks=[("log", log), ("silent", Silent()), ("instance", per_instance),
                   ("r2", EpochScoring("r2", lower_is_better=False))],
    )
    est = SoftRegRegressor(**{**params, **kwargs}).fit(*_data())
    return est, log.calls


def test_every_batch_hook_runs_with_the_full_gradient():
    est, calls = _fit()
    # 3 epochs of 4 training (120 rows) and 1 validation batches; training batches
    # also see the gradients; the instance-level hook runs after each batch
    n_train = sum(1 for c in calls if c[:2] == ("begin", True))
    assert n_train == 12 and calls.count(("grad",)) == 12
    assert calls.count(("instance",)) == 15
    # on_batch_end sees the loss that history records for the batch
    ends = [c[2] for c in calls if c[0] == "end" and c[1]]
    recorded = [b["train_loss"] for row in est.history for b in row["batches"] if "train_loss" in b]
    assert ends == recorded


def test_fit_inside_no_grad_trains_as_outside():
    """A training step enables gradients where they are off (as skorch's closure does
    under ``optimizer.step``) and skips the context where they are on already."""
    X, y = _data()
    params = dict(lambda2=1e-3, max_epochs=6, batch_size=32, random_state=0,
                  early_stopping=False)
    outside = SoftRegRegressor(**params).fit(X, y)
    with torch.no_grad():
        inside = SoftRegRegressor(**params).fit(X, y)
        assert not torch.is_grad_enabled()  # the fit left the caller's mode as it was
    for a, b in zip(outside.module_.parameters(), inside.module_.parameters()):
        assert torch.equal(a, b)
    losses = inside.history[:, "train_loss"]
    assert losses[-1] < losses[0]  # it trained


def test_step_pre_hook_sees_skorchs_order():
    """With a step pre-hook the step takes skorch's closure: the hook runs before backward."""
    seen = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append(opt.param_groups[0]["params"][0].grad))
    try:
        SoftRegRegressor(max_epochs=1, batch_size=150, random_state=0,
                         early_stopping=False).fit(*_data())
    finally:
        handle.remove()
    assert seen == [None]  # inside step(closure): zero_grad ran, backward had not yet


def test_lbfgs_fits():
    est = SoftRegRegressor(optimizer=torch.optim.LBFGS, lr=0.5, max_epochs=2, batch_size=150,
                           random_state=0, early_stopping=False).fit(*_data())
    assert np.isfinite(est.history_[-1, "train_loss"])


def test_custom_zero_grad_is_still_called():
    calls = []

    class CountingSGD(torch.optim.SGD):
        def zero_grad(self, set_to_none=True):
            calls.append(set_to_none)
            super().zero_grad(set_to_none)

    est = SoftRegRegressor(optimizer=CountingSGD, max_epochs=2, batch_size=50, random_state=0,
                           early_stopping=False)
    est.fit(*_data())
    assert len(calls) == 2 * 3


@pytest.mark.parametrize("batch_size", [16, 4096])
def test_residual_std_does_not_depend_on_the_evaluation_batches(batch_size):
    """_after_fit evaluates the training rows in large batches; predict uses batch_size."""
    X, y = _data()
    est = SoftRegRegressor(max_epochs=3, batch_size=batch_size, random_state=0,
                           early_stopping=False).fit(X, y)
    resid = y - est.predict(X)
    np.testing.assert_allclose(est.residual_std_[0], np.sqrt(np.mean(resid**2)), rtol=1e-5)


def test_hook_calls_leave_out_empty_methods_only():
    est = SoftRegRegressor(callbacks=[("log", HookLog()), ("silent", Silent())], max_epochs=1,
                           early_stopping=False).fit(*_data())
    callbacks = dict(est.callbacks_)
    log, guard = callbacks["log"], callbacks["non_finite"]
    # NeuralNet.on_batch_begin records the batch row; the guard checks each batch's loss
    assert hook_calls(est, "on_batch_begin") == [est.on_batch_begin, log.on_batch_begin]
    assert hook_calls(est, "on_batch_end") == [guard.on_batch_end, log.on_batch_end]
    assert hook_calls(est, "on_grad_computed") == [log.on_grad_computed]
    silent = Silent()
    silent.on_batch_begin = lambda net, **kw: None  # set on the instance: called
    est.callbacks_.append(("instance", silent))
    assert hook_calls(est, "on_batch_begin")[-1] is silent.on_batch_begin


def test_batch_history_is_a_history():
    rows = []
    for cls in (History, BatchHistory):
        history = cls()
        history.new_epoch()
        history.new_batch()
        history.record_batch("train_loss", 0.5)
        history.new_batch()
        history.record_batch("train_loss", 0.25)
        history.record("epoch", 1)
        rows.append(history.to_list())
        restored = pickle.loads(pickle.dumps(history))
        assert type(restored) is cls and restored.to_list() == history.to_list()
        assert history[-1, "batches", :, "train_loss"] == [0.5, 0.25]
    assert rows[0] == rows[1]


class _Order(Callback):
    """Appends its name to the batch's history row at each batch end; at each batch
    begin, checks that the net's own on_batch_begin already opened the row."""

    def __init__(self, name):
        self.name = name

    def on_batch_begin(self, net, training=None, **kwargs):
        row = list.__getitem__(net.history, -1)["batches"][-1]
        assert "train_loss" not in row and "valid_loss" not in row  # a fresh row
        row.setdefault("begin", []).append(self.name)

    def on_batch_end(self, net, **kwargs):
        list.__getitem__(net.history, -1)["batches"][-1].setdefault("end", []).append(self.name)


def test_batch_hooks_run_in_the_callbacks_order():
    # skorch's notify: the net's own method first, then the callbacks in their order
    est = SoftRegRegressor(callbacks=[("a", _Order("a")), ("b", _Order("b"))], max_epochs=2,
                           batch_size=50, lambda1=1e-3, random_state=0,
                           early_stopping=False).fit(*_data())
    batches = [b for row in est.history for b in row["batches"]]
    assert len(batches) == 2 * 3
    assert all(b["begin"] == ["a", "b"] and b["end"] == ["a", "b"] for b in batches)
