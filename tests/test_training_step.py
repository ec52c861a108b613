"""The training step's shortcuts keep skorch's semantics and the objective's math.

- fused Adam/AdamW by default, as a default that any ``optimizer__*`` choice overrides;
- the λ2 gradient added after backward equals backpropagating λ2·Σw²;
- the penalty terms in history belong to the loss evaluation skorch records,
  also for optimizers that evaluate the loss several times per step (LBFGS);
- train/eval modes are exactly those skorch sets, though unchanged modules are skipped.
"""

import copy

import numpy as np
import pytest
import torch
from _objective import assert_row_matches, hand_terms
from skorch import NeuralNetRegressor
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit
from torch import nn

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor
from sk_softreg.penalties import add_l2_grad_, kl_from_uniform, kl_to_uniform, l2_penalty

FAST = dict(max_epochs=2, random_state=0, device="cpu")
TINY_CNN = dict(module__channels=(4, 8), module__hidden_units=16)


# ----------------------------------------------------------------------------
# fused optimizer by default
@pytest.mark.parametrize("optimizer", [torch.optim.Adam, torch.optim.AdamW])
def test_adam_is_fused_by_default_without_showing_in_params(regression_data, optimizer):
    X, y = regression_data
    est = SoftRegRegressor(optimizer=optimizer, **FAST).fit(X, y)
    assert est.optimizer_.defaults["fused"] is True
    assert not any(key.startswith("optimizer__") for key in est.get_params())


@pytest.mark.parametrize(
    "kwargs, fused",
    [
        ({"optimizer__fused": False}, False),
        ({"optimizer__foreach": True}, None),
        ({"optimizer": torch.optim.SGD}, None),
    ],
    ids=["user-unfused", "user-foreach", "sgd"],
)
def test_user_optimizer_choice_wins_over_fused_default(regression_data, kwargs, fused):
    X, y = regression_data
    est = SoftRegRegressor(**{**FAST, **kwargs}).fit(X, y)
    assert est.optimizer_.defaults.get("fused") is fused


# ----------------------------------------------------------------------------
# λ2 through the gradient
def test_add_l2_grad_is_the_gradient_of_the_penalty():
    torch.manual_seed(0)
    a, b = torch.randn(3, 4, requires_grad=True), torch.randn(5, requires_grad=True)
    (0.3 * l2_penalty([a, b])).backward()
    expected = [a.grad.clone(), b.grad.clone()]
    a.grad = torch.ones_like(a)  # an existing gradient is added to
    b.grad = None  # a missing one is created
    add_l2_grad_([a, b], 0.3)
    torch.testing.assert_close(a.grad, expected[0] + 1.0)
    torch.testing.assert_close(b.grad, expected[1])
    torch.testing.assert_close(b.grad, 0.6 * b.detach())


class _Spy(Callback):
    """Keep a copy of the module at the start of training and the first step's gradients."""

    def on_train_begin(self, net, **kwargs):
        self.initial_ = copy.deepcopy(net.module_)

    def on_grad_computed(self, net, named_parameters, **kwargs):
        if not hasattr(self, "grads_"):
            self.grads_ = {name: p.grad.clone() for name, p in net.module_.named_parameters()}


@pytest.mark.parametrize("params, term", [
    ({"lambda2": 0.05}, torch.square),
    ({"lambda1": 0.05, "l1_method": "subgradient"}, torch.abs),
], ids=["l2", "subgradient l1"])
def test_step_gradient_includes_the_penalty_term(digits, params, term):
    # The gradient that callbacks and the optimizer see is that of data + λ2·Σw²
    # (or, under l1_method="subgradient", data + λ1·Σ|w|) computed by autograd on the
    # same batch and weights.
    X, y = digits
    X, y = X[:64].reshape(-1, 1, 8, 8).astype(np.float32), y[:64]
    spy = _Spy()
    SoftRegCNNClassifier(
        **TINY_CNN, **params, max_epochs=1, batch_size=64, module__dropout=0.0,
        callbacks=[spy], random_state=0, device="cpu",
    ).fit(X, y)
    module = spy.initial_
    lam = params.get("lambda2", params.get("lambda1"))
    weights = [p for p in module.parameters() if p.ndim > 1]
    loss = nn.functional.cross_entropy(module(torch.as_tensor(X)), torch.as_tensor(y))
    (loss + lam * sum(term(w).sum() for w in weights)).backward()
    for name, p in module.named_parameters():
        torch.testing.assert_close(spy.grads_[name], p.grad, rtol=1e-5, atol=1e-7)


class _L2ThroughLoss(SoftRegRegressor):
    """The same estimator with λ2·Σw² backpropagated through the loss, instead of its
    gradient added after backward (the loss keeps its value)."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        loss = super().get_loss(y_pred, y_true, X=X, training=training)
        if not training:
            return loss
        l2 = self.lambda2 * l2_penalty(self._penalized_params())
        return loss + (l2 - l2.detach())

    def train_step_single(self, batch, **fit_params):
        return NeuralNetRegressor.train_step_single(self, batch, **fit_params)


def test_l2_via_gradient_matches_l2_through_the_loss(regression_data):
    X, y = regression_data
    kw = dict(lambda2=1e-2, lambda1=1e-3, alpha=0.1, max_epochs=5, random_state=0, device="cpu")
    fast = SoftRegRegressor(**kw).fit(X, y)
    slow = _L2ThroughLoss(**kw).fit(X, y)
    for key in ("train_loss", "train_l1", "train_l2", "train_kl"):
        assert fast.history[:, key] == pytest.approx(slow.history[:, key], rel=1e-5)
    mean, std = fast.predict(X, return_std=True)
    mean_slow, std_slow = slow.predict(X, return_std=True)
    np.testing.assert_allclose(mean, mean_slow, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std, std_slow, rtol=1e-4)


# ----------------------------------------------------------------------------
# a weight without gradient
class _GradHook(Callback):
    """Implements on_grad_computed (doing nothing): the step then adds 2·λ2·w itself."""

    def on_grad_computed(self, net, named_parameters, **kwargs):
        pass


class _UnusedLayer(nn.Module):
    """A regressor module with a penalized weight that gets no gradient."""

    def __init__(self, n_features=1, n_outputs=1):
        super().__init__()
        self.used = nn.Linear(n_features, n_outputs)
        self.unused = nn.Linear(3, 3)

    def forward(self, X):
        return self.used(X)


def test_weight_without_gradient_still_decays(regression_data):
    # add_l2_grad_ gives a weight without gradient the gradient 2·λ2·w
    X, y = regression_data
    kw = {**FAST, "module": _UnusedLayer, "lambda2": 1e-1, "max_epochs": 3, "lr": 1e-2}
    est = SoftRegRegressor(**kw).fit(X, y)
    untouched = SoftRegRegressor(**{**kw, "lambda2": 0.0}).fit(X, y).module_.unused.weight
    assert est.module_.unused.weight.abs().sum() < 0.99 * untouched.abs().sum()
    ref = SoftRegRegressor(**kw, callbacks=[_GradHook()]).fit(X, y)
    torch.testing.assert_close(est.module_.unused.weight, ref.module_.unused.weight)


# ----------------------------------------------------------------------------
# the classifier's data + α·KL: torch's label smoothing where the identity holds
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"kl": "confidence_penalty"},
        {"criterion__weight": torch.linspace(0.5, 2.0, 10)},
        {"criterion__label_smoothing": 0.1},
        {"alpha": 0.0},
    ],
    ids=["label-smoothing-identity", "confidence", "class-weights", "own-smoothing", "no-kl"],
)
def test_classifier_training_loss_is_cross_entropy_plus_alpha_kl(digits, params):
    """CE + α·KL(u‖p) = (1+α)·CE_ε − α·log K: value and gradient as the composite."""
    X, y = digits
    images, target = X[:64].reshape(-1, 1, 8, 8).astype(np.float32), torch.as_tensor(y[:64])
    params = {"alpha": 0.3, **params}
    est = SoftRegCNNClassifier(**TINY_CNN, **FAST, **params).fit(images, y[:64])
    logits = est.module_.eval()(torch.as_tensor(images)).detach().requires_grad_()
    loss = est.get_loss(logits, target, training=True)
    kl = (kl_to_uniform if params.get("kl") else kl_from_uniform)(logits).mean()
    expected = est.criterion_(logits, target) + est.alpha * kl
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(loss, logits)[0],
                               torch.autograd.grad(expected, logits)[0], rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------
# history terms of the recorded loss evaluation
class _CountingClassifier(SoftRegCNNClassifier):
    def get_loss(self, y_pred, y_true, X=None, training=False):
        self.training_evaluations_ = getattr(self, "training_evaluations_", 0) + training
        return super().get_loss(y_pred, y_true, X=X, training=training)


def test_lbfgs_records_the_terms_of_the_recorded_loss(digits):
    # LBFGS evaluates the loss up to max_iter times per step. skorch records the
    # first evaluation as train_loss: the terms must be those of that evaluation,
    # here at the initial weights (one full batch, one step), computed by hand.
    X, y = digits
    X, y = X[:100].reshape(-1, 1, 8, 8).astype(np.float32), y[:100]
    lam1, lam2, alpha = 1e-3, 2e-3, 0.5
    spy = _Spy()
    est = _CountingClassifier(
        **TINY_CNN, module__dropout=0.0, random_state=0, device="cpu", callbacks=[spy],
        lambda1=lam1, lambda2=lam2, alpha=alpha, optimizer=torch.optim.LBFGS,
        optimizer__max_iter=5, lr=0.5, max_epochs=1, batch_size=100,
    ).fit(X, y)
    assert est.training_evaluations_ > 1  # several loss evaluations in the one step
    assert_row_matches(est.history[-1], hand_terms(spy.initial_, X, y, lam1, lam2, alpha), 1e-5)


def test_terms_are_not_recorded_outside_training_steps(digits):
    X, y = digits
    est = SoftRegCNNClassifier(**TINY_CNN, lambda2=1e-2, alpha=0.1, **FAST).fit(X[:64], y[:64])
    before = getattr(est, "_fit_state", None)
    logits = est.forward(X[:8].reshape(-1, 1, 8, 8).astype(np.float32))
    est.get_loss(logits, torch.as_tensor(y[:8]), training=True)
    assert getattr(est, "_fit_state", None) is before is None


# ----------------------------------------------------------------------------
# train / eval modes
class _Probe(nn.Module):
    """A small net that records the training flags of itself and its dropout per forward."""

    def __init__(self, n_features=1, n_outputs=1):
        super().__init__()
        self.hidden = nn.Linear(n_features, 8)
        self.drop = nn.Dropout(0.1)
        self.out = nn.Linear(8, n_outputs)
        self.seen = []

    def forward(self, X):
        self.seen.append((self.training, self.drop.training))
        return self.out(self.drop(torch.relu(self.hidden(X))))


class _MeddleWithModes(Callback):
    """Put the module (or only its dropout) in eval mode before each training batch."""

    def __init__(self, target="drop"):
        self.target = target

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:
            (net.module_.drop if self.target == "drop" else net.module_).eval()


class _SkorchModes(SoftRegRegressor):
    """The same estimator with skorch's own _set_training (always calls train())."""

    def _set_training(self, training=True):
        NeuralNetRegressor._set_training(self, training)


@pytest.mark.parametrize("target", ["drop", "module"])
def test_modes_are_those_skorch_sets(regression_data, target):
    # skorch sets train mode on the whole module at every training batch, after
    # on_batch_begin: a submodule switched to eval by a callback is switched back.
    X, y = regression_data
    kw = dict(callbacks=[_MeddleWithModes(target)], train_split=ValidSplit(4), batch_size=50, **FAST)
    ours = SoftRegRegressor(_Probe, **kw).fit(X, y).module_.seen
    theirs = _SkorchModes(_Probe, **kw).fit(X, y).module_.seen
    assert ours == theirs
    # per epoch 3 training batches, then 1 validation batch (after the width probe)
    assert ours[1:5] == [(True, True)] * 3 + [(False, False)]


class _FrozenDropout(_Probe):
    """Overrides train() to keep its dropout in eval mode, a common pattern for frozen norms."""

    def train(self, mode=True):
        super().train(mode)
        self.drop.eval()
        return self


def test_module_overriding_train_is_still_called(regression_data):
    X, y = regression_data
    ours = SoftRegRegressor(_FrozenDropout, batch_size=50, **FAST).fit(X, y).module_.seen
    assert ours == _SkorchModes(_FrozenDropout, batch_size=50, **FAST).fit(X, y).module_.seen
    assert ours[1:9] == [(True, False)] * 8  # 2 epochs of 4 batches, after the width probe


class _WithEmptySlot(_Probe):
    """A submodule slot registered as None (nn.Module allows it)."""

    def __init__(self, n_features=1, n_outputs=1):
        super().__init__(n_features, n_outputs)
        self.register_module("unused", None)


def test_module_with_empty_submodule_slot(regression_data):
    X, y = regression_data
    seen = SoftRegRegressor(_WithEmptySlot, batch_size=50, **FAST).fit(X, y).module_.seen
    assert seen[1:9] == [(True, True)] * 8


# ----------------------------------------------------------------------------
# memory format of the default CNN on the CPU
def _conv_weights(clf):
    # more than one input channel: the two layouts differ
    return [p for p in clf.module_.parameters() if p.ndim == 4 and p.shape[1] > 1]


@pytest.mark.parametrize(
    "params, channels_last",
    [
        ({}, True),
        ({"optimizer": torch.optim.SGD}, True),
        ({"optimizer": torch.optim.LBFGS}, False),  # LBFGS views gradients as flat vectors
        ({"module": "SoftRegCNN"}, False),  # a module passed explicitly keeps its layout
    ],
)
def test_default_cnn_weights_are_channels_last_on_cpu(digits, params, channels_last):
    from sk_softreg.modules import SoftRegCNN

    X, y = digits
    params = {k: SoftRegCNN if v == "SoftRegCNN" else v for k, v in params.items()}
    clf = SoftRegCNNClassifier(**{**FAST, "max_epochs": 1}, **TINY_CNN, lambda1=1e-3, **params)
    clf.fit(X[:128], y[:128])
    weights = _conv_weights(clf)
    assert weights
    for p in weights:
        assert p.is_contiguous(memory_format=torch.channels_last) is channels_last
        assert p.is_contiguous() is not channels_last


def test_channels_last_module_computes_the_same_function(digits):
    X, y = digits
    clf = SoftRegCNNClassifier(**FAST, **TINY_CNN).fit(X[:128], y[:128])
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in _conv_weights(clf))
    plain = copy.deepcopy(clf.module_).to(memory_format=torch.contiguous_format).eval()
    clf.module_.eval()
    Xt = torch.as_tensor(X[:64], dtype=torch.float32).reshape(-1, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(clf.module_(Xt), plain(Xt), rtol=1e-5, atol=1e-5)


class _CountsTrain(_Probe):
    """Counts the calls of its own train() (an override that keeps the flags consistent)."""

    def __init__(self, n_features=1, n_outputs=1):
        super().__init__(n_features, n_outputs)
        self.train_calls = 0

    def train(self, mode=True):
        self.train_calls += 1
        return super().train(mode)


def test_train_override_is_called_as_often_as_skorch_calls_it(regression_data):
    X, y = regression_data
    ours = SoftRegRegressor(_CountsTrain, batch_size=50, **FAST).fit(X, y).module_
    theirs = _SkorchModes(_CountsTrain, batch_size=50, **FAST).fit(X, y).module_
    assert ours.train_calls == theirs.train_calls >= 2 * 4  # at least once per training batch


class _TermsAtEachBatch(Callback):
    """Records (rows, λ1·Σ|w|, λ2·Σw²) of the penalized weights at each training batch."""

    def on_train_begin(self, net, **kwargs):
        self.rows_ = []

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training:
            weights = [p.detach().double() for p in net._penalized_params()]
            self.rows_.append((
                len(batch[1]),
                net.lambda1 * sum(float(w.abs().sum()) for w in weights),
                net.lambda2 * sum(float(w.square().sum()) for w in weights),
            ))


def test_history_terms_weight_each_batch_by_its_rows(regression_data):
    # 65 rows in batches of 32: the one-row batch counts once in the epoch's means
    X, y = regression_data
    spy = _TermsAtEachBatch()
    est = SoftRegRegressor(lambda1=1e-2, lambda2=1e-2, max_epochs=1, batch_size=32, lr=0.1,
                           random_state=0, device="cpu", callbacks=[spy]).fit(X[:65], y[:65])
    rows = np.array(spy.rows_)
    assert rows[:, 0].tolist() == [32, 32, 1]
    expected = rows[:, 0] @ rows[:, 1:] / rows[:, 0].sum()
    assert est.history[-1, "train_l1"] == pytest.approx(expected[0], rel=1e-5)
    assert est.history[-1, "train_l2"] == pytest.approx(expected[1], rel=1e-5)


def test_proximal_l1_alone_is_an_sgd_step_then_soft_thresholding(digits):
    # λ1 alone (no λ2): one full-batch SGD step, then w ← sign(w)·max(|w| − lr·λ1, 0)
    X, y = digits
    X, y = X[:64].reshape(-1, 1, 8, 8).astype(np.float32), y[:64]
    lam1, lr = 0.05, 0.1
    spy = _Spy()
    est = SoftRegCNNClassifier(
        **TINY_CNN, lambda1=lam1, optimizer=torch.optim.SGD, lr=lr, max_epochs=1, batch_size=64,
        module__dropout=0.0, callbacks=[spy], random_state=0, device="cpu",
    ).fit(X, y)
    module = spy.initial_
    nn.functional.cross_entropy(module(torch.as_tensor(X)), torch.as_tensor(y)).backward()
    with torch.no_grad():
        for p in module.parameters():
            p -= lr * p.grad
            if p.ndim > 1:
                p.copy_(torch.sign(p) * torch.clamp(p.abs() - lr * lam1, min=0.0))
    for (name, a), b in zip(est.module_.named_parameters(), module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert est.sparsity_ > 0


class _NewModule(Callback):
    """At the second epoch's start, replace the module with a copy and build its optimizer."""

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == 2:
            net.module_ = copy.deepcopy(net.module_)
            net.initialize_optimizer()


def test_penalties_follow_a_module_replaced_mid_fit(regression_data):
    # plain SGD keeps no state: a copy with a new optimizer trains as the original would,
    # provided the penalties act on the new module's weights
    X, y = regression_data
    kw = dict(lambda1=1e-2, lambda2=1e-2, optimizer=torch.optim.SGD, lr=0.05, batch_size=50,
              max_epochs=3, random_state=0, device="cpu")
    replaced = SoftRegRegressor(**kw, callbacks=[_NewModule()]).fit(X, y)
    plain = SoftRegRegressor(**kw).fit(X, y)
    for (name, a), b in zip(replaced.module_.named_parameters(), plain.module_.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    np.testing.assert_allclose(replaced.history[:, "train_l2"], plain.history[:, "train_l2"],
                               rtol=1e-5)
