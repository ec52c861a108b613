"""The fast layer keeps skorch's training modes, history and gradients (sk_softreg._fast_loop).

Each override in _fast_loop.py skips work skorch does; these tests pin what
skorch's own code would leave behind: modes set, a fresh history per fit,
gradients zeroed as asked, prepared tensors reused only for their dataset.
"""

import numpy as np
import torch
from skorch.callbacks import Callback
from torch import nn

from sk_softreg import SoftRegRegressor
from sk_softreg._batching import TensorBatches

FAST = dict(max_epochs=2, batch_size=20, random_state=0, device="cpu", early_stopping=False)


def _data(n=60):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    return X, (X @ np.array([1.0, -1.0, 0.5])).astype(np.float32)


class CountsTrain(nn.Module):
    """Overrides train() (which may do more than set flags) and counts the calls."""

    def __init__(self, n_features=1, n_outputs=1):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)
        self.train_calls = []

    def train(self, mode=True):
        self.train_calls.append(mode)
        return super().train(mode)

    def forward(self, X):
        return self.linear(X)


def test_a_train_override_runs_at_every_training_batch():
    X, y = _data()
    reg = SoftRegRegressor(CountsTrain, lambda1=1e-3, **FAST).fit(X, y)
    n_batches = sum(len(row["batches"]) for row in reg.history)
    assert n_batches == 6
    module = next(m for m in reg.module_.modules() if isinstance(m, CountsTrain))
    assert module.train_calls.count(True) >= n_batches


class WithNoneSlot(nn.Module):
    """A submodule slot registered as None (an optional layer left out)."""

    def __init__(self, n_features=1, n_outputs=1):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)
        self.register_module("optional", None)

    def forward(self, X):
        return self.linear(X)


def test_a_module_with_a_none_submodule_fits():
    X, y = _data()
    reg = SoftRegRegressor(WithNoneSlot, **FAST).fit(X, y)
    module = next(m for m in reg.module_.modules() if isinstance(m, WithNoneSlot))
    assert module._modules["optional"] is None
    assert reg.n_iter_ == 2 and np.isfinite(reg.predict(X)).all()


class _EvalSubmodule(Callback):
    """After each training batch, puts one submodule in eval mode; records the mode
    that submodule has in each training forward pass."""

    def on_train_begin(self, net, **kwargs):
        self.modes_ = []
        self.sub_ = [m for m in net.module_.modules() if isinstance(m, nn.Linear)][0]
        self.sub_.register_forward_pre_hook(
            lambda module, args: self.modes_.append(module.training) if net.module_.training
            else None)

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.sub_.eval()


def test_training_batches_put_the_whole_module_tree_back_in_train_mode():
    # skorch calls module.train(True) before each training batch, which resets
    # every submodule, also one that only a submodule's flag left out of train mode
    X, y = _data()
    spy = _EvalSubmodule()
    SoftRegRegressor(lambda1=1e-3, callbacks=[spy], **FAST).fit(X, y)
    assert len(spy.modes_) == 6 and all(spy.modes_)


def test_a_second_fit_starts_a_fresh_history():
    X, y = _data()
    reg = SoftRegRegressor(**FAST).fit(X, y)
    reg.fit(X, y)
    assert reg.history[:, "epoch"] == [1, 2]
    reg.partial_fit(X, y)  # partial_fit goes on with the history
    assert reg.history[:, "epoch"] == [1, 2, 3, 4]


def test_batch_size_minus_one_is_one_tensor_batch_of_every_row():
    X, y = _data()
    reg = SoftRegRegressor(**{**FAST, "batch_size": -1}).fit(X, y)
    batches = reg.get_iterator(reg.get_dataset(X, y), training=True)
    assert isinstance(batches, TensorBatches)
    assert batches.batch_size == len(X) and len(batches) == 1


def test_zero_grad_with_set_to_none_false_keeps_zero_tensors():
    # skorch's hook for subclasses: _zero_grad_optimizer(False) zeroes the gradients
    X, y = _data()
    reg = SoftRegRegressor(**FAST).fit(X, y)
    params = list(reg.module_.parameters())
    for p in params:
        p.grad = torch.ones_like(p)
    reg._zero_grad_optimizer(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in params)
    reg._zero_grad_optimizer()
    assert all(p.grad is None for p in params)


class _PreparedTensors(Callback):
    """At the first epoch's end, asks for batches of datasets during the fit."""

    def __init__(self, X, y):
        self.X, self.y = X, y

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) != 1:
            return
        dataset = net.get_dataset(self.X, self.y)
        first, again = net.get_iterator(dataset), net.get_iterator(dataset)
        self.reused_ = first.X is again.X
        # another dataset whose id the cache holds (as after the first was freed
        # and its address reused) gets its own rows
        other = net.get_dataset(self.X[::-1].copy(), self.y[::-1].copy())
        net._fit_state.batches[id(other)] = net._fit_state.batches[id(dataset)]
        self.other_rows_ = net.get_iterator(other).X.cpu().numpy()


def test_prepared_tensors_are_reused_for_their_dataset_only():
    X, y = _data()
    spy = _PreparedTensors(X[:10], y[:10])
    SoftRegRegressor(callbacks=[spy], **FAST).fit(X, y)
    assert spy.reused_
    np.testing.assert_array_equal(spy.other_rows_, X[:10][::-1])
