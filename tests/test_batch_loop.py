"""The lean per-batch bookkeeping against skorch's own (sk_softreg._batch_loop)."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import make_regression
from skorch import NeuralNet
from skorch.callbacks import Callback, EpochScoring
from skorch.dataset import ValidSplit
from skorch.history import History
from torch.optim.optimizer import register_optimizer_step_pre_hook

from sk_softreg import SoftRegRegressor
from sk_softreg._base import SoftRegMixin
from sk_softreg._batch_loop import (
    BatchHistory,
    closure_free,
    hook_calls,
    implements,
    set_grads_to_none,
)


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


def _fit(skorch_loop, monkeypatch, **kwargs):
    """A seeded fit with our loop, or with skorch's notify/run_single_epoch/zero_grad/history."""
    if skorch_loop:
        for name in ("notify", "run_single_epoch", "_zero_grad_optimizer", "initialize_history"):
            monkeypatch.setattr(SoftRegMixin, name, getattr(NeuralNet, name))
        monkeypatch.setattr(SoftRegMixin, "_optimizer_step", NeuralNet.train_step)
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
    monkeypatch.undo()
    return est, log.calls


def _without_durations(history):
    return [{k: v for k, v in row.items() if k != "dur"} for row in history]


def test_same_history_hooks_and_weights_as_skorchs_loop(monkeypatch):
    ours, ours_calls = _fit(False, monkeypatch)
    ref, ref_calls = _fit(True, monkeypatch)
    assert type(ours.history_) is BatchHistory and type(ref.history_) is History
    assert _without_durations(ours.history_) == _without_durations(ref.history_)
    assert ours_calls == ref_calls
    # 3 epochs of 4 training (120 rows) and 1 validation batches; training batches
    # also see the gradients; the instance-level hook runs after each batch
    n_train = sum(1 for c in ours_calls if c[:2] == ("begin", True))
    assert n_train == 12 and ours_calls.count(("grad",)) == 12
    assert ours_calls.count(("instance",)) == 15
    for a, b in zip(ours.module_.parameters(), ref.module_.parameters()):
        assert torch.equal(a, b)


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


def test_no_op_hooks_are_recognized():
    log, silent = HookLog(), Silent()
    assert implements(log, "on_batch_end") and not implements(silent, "on_batch_end")
    silent.on_batch_begin = lambda net, **kw: None
    assert implements(silent, "on_batch_begin") and not implements(silent, "on_grad_computed")


def test_hook_calls_leave_out_empty_methods_only():
    est = SoftRegRegressor(callbacks=[("log", HookLog()), ("silent", Silent())], max_epochs=1,
                           early_stopping=False).fit(*_data())
    log = dict(est.callbacks_)["log"]
    # NeuralNet.on_batch_begin records the batch row; our on_batch_end checks the loss
    assert hook_calls(est, "on_batch_begin") == [est.on_batch_begin, log.on_batch_begin]
    assert hook_calls(est, "on_batch_end") == [est.on_batch_end, log.on_batch_end]
    assert hook_calls(est, "on_grad_computed") == [log.on_grad_computed]


def test_closure_free_optimizers():
    w = torch.nn.Parameter(torch.ones(3))
    assert closure_free(torch.optim.Adam([w])) and closure_free(torch.optim.SGD([w], lr=0.1))
    assert not closure_free(torch.optim.LBFGS([w]))
    hooked = torch.optim.Adam([w])
    handle = hooked.register_step_pre_hook(lambda opt, args, kwargs: None)
    assert not closure_free(hooked)
    handle.remove()
    assert closure_free(hooked)

    class Custom(torch.optim.Optimizer):  # defined outside torch.optim: may need the closure
        def step(self, closure):
            return closure()

    assert not closure_free(Custom([w], {}))


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


def test_set_grads_to_none_only_for_torchs_zero_grad():
    w = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([w], lr=0.1)
    w.grad = torch.ones(3)
    assert set_grads_to_none(optimizer) and w.grad is None

    class KeepsGrads(torch.optim.SGD):
        def zero_grad(self, set_to_none=True):
            pass

    custom = KeepsGrads([w], lr=0.1)
    w.grad = torch.ones(3)
    assert not set_grads_to_none(custom) and w.grad is not None


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


@pytest.mark.parametrize("batch_size", [16, 4096])
def test_residual_std_does_not_depend_on_the_evaluation_batches(batch_size):
    """_after_fit evaluates the training rows in large batches; predict uses batch_size."""
    X, y = _data()
    est = SoftRegRegressor(max_epochs=3, batch_size=batch_size, random_state=0,
                           early_stopping=False).fit(X, y)
    resid = y - est.predict(X)
    np.testing.assert_allclose(est.residual_std_[0], np.sqrt(np.mean(resid**2)), rtol=1e-5)


def test_large_eval_batches_are_bounded_in_rows_and_bytes(monkeypatch):
    import sk_softreg._batching as batching

    X, y = _data()  # 5 float32 features (no target when predicting): 20 bytes per row
    est = SoftRegRegressor(max_epochs=1, batch_size=16, random_state=0,
                           early_stopping=False).fit(X, y)
    dataset = est.get_dataset(X)
    with est._large_eval_batches(rows=100):
        assert est.get_iterator(dataset, training=False).batch_size == 100
        assert est.get_iterator(dataset, training=True).batch_size == 16
        monkeypatch.setattr(batching, "BLOCK_BYTES", 20 * 40)
        assert est.get_iterator(dataset, training=False).batch_size == 40
        monkeypatch.setattr(batching, "BLOCK_BYTES", 20)
        assert est.get_iterator(dataset, training=False).batch_size == 16  # never below
    assert est.get_iterator(dataset, training=False).batch_size == 16
