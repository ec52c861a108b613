"""The penalized weights in one flat buffer during a fit (sk_softreg._flat).

The buffer is a speed device only: a fit with it must train bit-identical
weights to a fit that keeps every tensor in its own storage, fall back when
anything replaces the tensors mid-fit, and leave no shared storage behind.
The fits that compare the two run on torch's kernels (``torch_kernels``):
numba's loops, which only the buffer uses, round the square root of the
proximal step correctly and torch's CPU kernel not always; test_numba_loops.py
compares those loops with torch's kernels.
"""

import copy

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from torch import nn

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor
from sk_softreg._flat import flatten_
from sk_softreg.penalties import prox_thresholds, select_penalized

FAST = dict(max_epochs=2, batch_size=32, random_state=0, device="cpu")
TINY_CNN = dict(module__channels=(4, 8), module__hidden_units=16)
PENALTIES = dict(lambda1=1e-3, lambda2=1e-3, alpha=0.1)


def _per_tensor(cls):
    """The same estimator with every penalized tensor kept in its own storage."""
    return type(cls.__name__, (cls,), {"_fast_layer": False})


class _FlatSpy(Callback):
    """Records, per training batch, whether the penalized weights lived in the flat buffer."""

    def on_train_begin(self, net, **kwargs):
        self.flat_ = []

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            flat = getattr(net._fit_state.engine, "_flat", None)
            self.flat_.append(
                flat is not None
                and all(_inside(p, flat.weights) for p in select_penalized(net.module_))
            )


def _inside(tensor, buffer):
    start = buffer.data_ptr()
    return start <= tensor.data_ptr() < start + buffer.numel() * buffer.element_size()


def _owns_its_storage(t):
    return t.untyped_storage().nbytes() == t.numel() * t.element_size()


def _images(digits, n=256):
    X, y = digits
    return X[:n].reshape(-1, 1, 8, 8).astype(np.float32), y[:n]


CASES = {
    "Adam": (SoftRegCNNClassifier, TINY_CNN),
    "Adam amsgrad": (SoftRegCNNClassifier, {**TINY_CNN, "optimizer__amsgrad": True}),
    "AdamW": (SoftRegCNNClassifier, {**TINY_CNN, "optimizer": torch.optim.AdamW}),
    "SGD momentum": (
        SoftRegCNNClassifier,
        {**TINY_CNN, "optimizer": torch.optim.SGD, "optimizer__momentum": 0.9, "lr": 0.05},
    ),
    "penalize all": (SoftRegCNNClassifier, {**TINY_CNN, "penalize": "all"}),
    "regressor, lambda_features": (SoftRegRegressor, {"lambda_features": 1e-2}),
    "regressor, LBFGS": (
        SoftRegRegressor, {"optimizer": torch.optim.LBFGS, "lr": 0.5, "optimizer__max_iter": 3},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_flat_buffer_trains_bit_identical_weights(case, digits, regression_data, torch_kernels):
    cls, params = CASES[case]
    X, y = regression_data if cls is SoftRegRegressor else _images(digits)
    spy = _FlatSpy()
    flat = cls(**FAST, **PENALTIES, **params, callbacks=[spy]).fit(X, y)
    per_tensor = _per_tensor(cls)(**FAST, **PENALTIES, **params).fit(X, y)

    assert all(spy.flat_), "the penalized weights never lived in the flat buffer"
    for (name, a), b in zip(flat.module_.named_parameters(), per_tensor.module_.parameters()):
        assert torch.equal(a, b), name
        assert a.stride() == b.stride(), name
    # the history's sums are added up in another order: equal up to rounding
    for key in ("train_loss", "train_l1", "train_l2", "train_kl"):
        np.testing.assert_allclose(
            flat.history[:, key], per_tensor.history[:, key], rtol=1e-5, err_msg=key
        )


def test_no_flat_buffer_without_the_proximal_l1_step(digits):
    X, y = _images(digits)
    for params in ({"lambda2": 1e-3, "alpha": 0.1}, {"lambda1": 1e-3, "l1_method": "subgradient"}):
        spy = _FlatSpy()
        SoftRegCNNClassifier(**FAST, **TINY_CNN, **params, callbacks=[spy]).fit(X, y)
        assert not any(spy.flat_), params


class _Raise(Callback):
    def on_batch_end(self, net, training=False, **kwargs):
        if training and len(net.history[-1, "batches"]) == 2:
            raise RuntimeError("stop here")


@pytest.mark.parametrize("fails", [False, True])
def test_tensors_own_their_storage_after_fit(digits, fails):
    X, y = _images(digits)
    clf = SoftRegCNNClassifier(**FAST, **TINY_CNN, **PENALTIES, callbacks=[_Raise()] if fails else [])
    if fails:
        with pytest.raises(RuntimeError, match="stop here"):
            clf.fit(X, y)
    else:
        clf.fit(X, y)
    assert getattr(clf, "_fit_state", None) is None
    assert all(_owns_its_storage(p) for p in clf.module_.parameters())
    moments = [s["exp_avg_sq"] for s in clf.optimizer_.state.values()]
    assert moments and all(_owns_its_storage(v) for v in moments)


class _Replace(Callback):
    """At the third training batch, replace what the flat buffer holds."""

    def __init__(self, what):
        self.what = what

    def on_batch_end(self, net, training=False, **kwargs):
        if not training or len(net.history[-1, "batches"]) != 3 or len(net.history) != 1:
            return
        param = select_penalized(net.module_)[0]
        state = net.optimizer_.state
        if self.what == "parameter":
            param.data = param.data.clone(memory_format=torch.preserve_format)
        elif self.what == "optimizer state":  # as reloading a checkpoint does
            net.optimizer_.load_state_dict(copy.deepcopy(net.optimizer_.state_dict()))
        elif self.what == "one state dict":
            state[param] = {k: v.clone(memory_format=torch.preserve_format)
                            for k, v in state[param].items()}
        elif self.what == "one moment":
            state[param]["exp_avg_sq"] = state[param]["exp_avg_sq"].clone(
                memory_format=torch.preserve_format)
        else:  # state cleared: Adam starts afresh at the next step
            state.clear()


@pytest.mark.parametrize(
    "what", ["parameter", "optimizer state", "one state dict", "one moment", "state cleared"])
def test_replaced_tensors_mid_fit_fall_back_to_per_tensor_steps(digits, what, torch_kernels):
    X, y = _images(digits)
    spy = _FlatSpy()
    flat = SoftRegCNNClassifier(
        **FAST, **TINY_CNN, **PENALTIES, callbacks=[_Replace(what), spy]
    ).fit(X, y)
    per_tensor = _per_tensor(SoftRegCNNClassifier)(
        **FAST, **TINY_CNN, **PENALTIES, callbacks=[_Replace(what)]
    ).fit(X, y)
    assert spy.flat_[:2] == [True, True] and not any(spy.flat_[3:])
    for a, b in zip(flat.module_.parameters(), per_tensor.module_.parameters()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------
# flatten_ and FlatWeights on their own
def _stepped(params, optimizer_cls=torch.optim.Adam, **kwargs):
    optimizer = optimizer_cls(params, lr=1e-2, **kwargs)
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()
    return optimizer


def _params(*shapes, seed=0):
    torch.manual_seed(seed)
    return [nn.Parameter(torch.randn(*shape)) for shape in shapes]


def test_flatten_keeps_values_shapes_and_strides():
    params = _params((6, 3, 3, 3), (4, 6), (5,))
    params[0].data = params[0].data.contiguous(memory_format=torch.channels_last)
    optimizer = _stepped(params)
    before = [(p.detach().clone(), p.stride()) for p in params]
    moments = [optimizer.state[p]["exp_avg_sq"].clone() for p in params]
    flat = flatten_(params, optimizer)
    assert flat is not None
    assert flat.weights.numel() == sum(p.numel() for p in params)
    for p, (value, stride), v in zip(params, before, moments):
        assert _inside(p, flat.weights) and p.stride() == stride
        assert torch.equal(p, value)
        assert _inside(optimizer.state[p]["exp_avg_sq"], flat.moments)
        assert torch.equal(optimizer.state[p]["exp_avg_sq"], v)
    flat.restore_()
    for p, (value, stride) in zip(params, before):
        assert _owns_its_storage(p) and p.stride() == stride and torch.equal(p, value)
    assert all(_owns_its_storage(optimizer.state[p]["exp_avg_sq"]) for p in params)


@pytest.mark.parametrize("optimizer_cls, kwargs", [
    (torch.optim.Adam, {}),
    (torch.optim.Adam, {"amsgrad": True}),
    (torch.optim.SGD, {"momentum": 0.9}),
])
def test_flat_thresholds_are_the_per_tensor_thresholds(optimizer_cls, kwargs):
    params = _params((6, 3, 3, 3), (4, 6))
    optimizer = _stepped(params, optimizer_cls, **kwargs)
    expected = prox_thresholds(optimizer, params, 0.01)
    flat = flatten_(params, optimizer)
    got = flat.thresholds(0.01)
    if torch.is_tensor(expected[0]):
        assert torch.equal(got, torch.cat([t.reshape(-1) for t in expected]))
    else:
        assert got == expected[0] == expected[1]


def test_flat_thresholds_refuse_unequal_step_counts():
    params = _params((3, 4), (2, 5))
    optimizer = _stepped(params)
    flat = flatten_(params, optimizer)
    optimizer.state[params[1]]["step"] += 1
    assert flat.thresholds(0.01) is None


def test_flatten_declines_what_it_cannot_hold():
    def declines(params, optimizer):
        storages = [p.untyped_storage().data_ptr() for p in params]
        assert flatten_(params, optimizer) is None
        assert [p.untyped_storage().data_ptr() for p in params] == storages  # nothing moved

    one = _params((3, 4))
    declines(one, _stepped(one))
    fresh = _params((3, 4), (2, 5))
    declines(fresh, torch.optim.Adam(fresh))  # Adam before its first step
    mixed = _params((3, 4), (2, 5))
    mixed[1].data = mixed[1].data.double()
    declines(mixed, _stepped(mixed))
    split = _params((3, 4), (2, 5))
    optimizer = torch.optim.Adam([{"params": [split[0]]}, {"params": [split[1]], "lr": 0.1}])
    for p in split:
        p.grad = torch.ones_like(p)
    optimizer.step()
    declines(split, optimizer)
    views = _params((3, 4), (2, 5))
    views[0].data = torch.randn(20)[:12].view(3, 4)  # a view of a larger storage
    declines(views, _stepped(views))
    relaid = _params((6, 3, 3, 3), (4, 6))
    relaid[0].data = relaid[0].data.contiguous(memory_format=torch.channels_last)
    optimizer = _stepped(relaid)
    state = optimizer.state[relaid[0]]
    state["exp_avg_sq"] = state["exp_avg_sq"].contiguous()  # a moment laid out otherwise
    declines(relaid, optimizer)


class _ReplaceScaled(Callback):
    """At the third training batch, give a penalized weight new storage holding other values."""

    def on_batch_end(self, net, training=False, **kwargs):
        if training and len(net.history) == 1 and len(net.history[-1, "batches"]) == 3:
            param = select_penalized(net.module_)[0]
            param.data = param.data * 0.5


class _PenaltyValues(Callback):
    """Records λ1·Σ|w| and λ2·Σw² of the penalized weights at each training batch's start."""

    def on_train_begin(self, net, **kwargs):
        self.rows_ = []

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:
            params = [p.detach().double() for p in select_penalized(net.module_)]
            self.rows_.append((net.lambda1 * sum(float(p.abs().sum()) for p in params),
                               net.lambda2 * sum(float(p.square().sum()) for p in params)))


def test_history_terms_follow_weights_given_new_storage(digits):
    # after param.data = ..., the values come from the new tensors, not the stale buffer
    X, y = _images(digits, n=128)
    values = _PenaltyValues()
    net = SoftRegCNNClassifier(
        **{**FAST, "max_epochs": 1}, **TINY_CNN, **PENALTIES,
        callbacks=[_ReplaceScaled(), values],
    ).fit(X, y)
    expected = np.mean(values.rows_, axis=0)  # batches of 32 rows: a plain mean
    assert net.history[-1, "train_l1"] == pytest.approx(expected[0], rel=1e-5)
    assert net.history[-1, "train_l2"] == pytest.approx(expected[1], rel=1e-5)
