"""The penalty engine: the reference on penalties.py, the flat buffer, and model stacks.

A stack of models (each parameter with a leading model axis, one λ1 and λ2 per
model) must give every model what the engine gives that model alone: its
values, its gradients and its proximal step under Adam and SGD.
"""

import numpy as np
import pytest
import torch

from sk_softreg._engine import FlatPenaltyEngine, PenaltyEngine
from sk_softreg.penalties import l1_penalty, l2_penalty

SHAPES = [(6, 3, 3, 3), (4, 6), (5, 4)]
LAMBDA1 = [0.0, 1e-3, 20.0]
LAMBDA2 = [1e-2, 0.0, 3e-3]


def _models(n_models=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(*s, generator=g) for s in SHAPES] for _ in range(n_models)]


def _params(tensors):
    return [torch.nn.Parameter(t.clone()) for t in tensors]


def _stacked(models):
    return [torch.nn.Parameter(torch.stack([m[i] for m in models])) for i in range(len(SHAPES))]


def _gradients(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


def test_values_are_the_pure_functions():
    params = _params(_models(1)[0])
    l1, l2 = PenaltyEngine(params, 0.1, 0.2).values()
    assert float(l1) == pytest.approx(float(l1_penalty(params).detach()))
    assert float(l2) == pytest.approx(float(l2_penalty(params).detach()))
    assert not l1.requires_grad and not l2.requires_grad
    l1, l2 = PenaltyEngine(params, 0.1, 0.2, l1_method="subgradient", in_loss=True).values()
    assert l1.requires_grad and l2.requires_grad
    l1, l2 = PenaltyEngine(params, 0.1, 0.2, in_loss=True).values()
    assert not l1.requires_grad and l2.requires_grad  # the prox applies λ1


@pytest.mark.parametrize("l1_method", ["proximal", "subgradient"])
def test_added_gradients_are_those_of_the_penalty_terms(l1_method):
    params = _params(_models(1)[0])
    lam1, lam2 = 0.1, 0.2
    terms = lam2 * l2_penalty(params)
    if l1_method == "subgradient":
        terms = terms + lam1 * l1_penalty(params)
    expected = torch.autograd.grad(terms, params)
    PenaltyEngine(params, lam1, lam2, l1_method=l1_method).add_grads_()
    for p, g in zip(params, expected):
        torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("optimizer_cls, kwargs", [
    (torch.optim.Adam, {"lr": 1e-2}), (torch.optim.SGD, {"lr": 1e-1, "momentum": 0.9}),
])
@pytest.mark.parametrize("l1_method", ["proximal", "subgradient"])
def test_a_stack_of_models_is_each_model_alone(optimizer_cls, kwargs, l1_method):
    models = _models()
    alone = [_params(m) for m in models]
    stack = _stacked(models)
    lam1, lam2 = torch.tensor(LAMBDA1), torch.tensor(LAMBDA2)
    engines = [PenaltyEngine(p, LAMBDA1[i], LAMBDA2[i], l1_method) for i, p in enumerate(alone)]
    stacked = PenaltyEngine(stack, lam1, lam2, l1_method, stacked=True)
    optimizers = [optimizer_cls(p, **kwargs) for p in alone]
    stacked_optimizer = optimizer_cls(stack, **kwargs)
    for step in range(3):
        # each model's gradient of its data loss, the same in the stack
        for i, p in enumerate(alone):
            _gradients(p, seed=10 * step + i)
        for k, p in enumerate(stack):
            p.grad = torch.stack([alone[i][k].grad for i in range(len(models))]).clone()
        values = [e.values() for e in engines]
        l1, l2 = stacked.values()
        assert l1.shape == l2.shape == (len(models),)
        torch.testing.assert_close(l1, torch.stack([v[0] for v in values]))
        torch.testing.assert_close(l2, torch.stack([v[1] for v in values]))
        for e in engines:
            e.add_grads_()
        stacked.add_grads_()
        for o in optimizers:
            o.step()
        stacked_optimizer.step()
        for e, o in zip(engines, optimizers):
            e.prox_(o)
        stacked.prox_(stacked_optimizer)
        for k, p in enumerate(stack):
            torch.testing.assert_close(p.detach(), torch.stack([a[k].detach() for a in alone]))
    if l1_method == "proximal":  # the model with the largest λ1 has exact zeros
        assert (stack[1][2] == 0).any() and not (stack[1][0] == 0).any()


@pytest.mark.parametrize("optimizer_cls", [torch.optim.Adam, torch.optim.SGD])
def test_the_flat_engine_steps_as_the_reference(optimizer_cls, torch_kernels):
    models = _models(1)[0]
    ref, flat = _params(models), _params(models)
    engines = [PenaltyEngine(ref, 1e-2, 1e-3), FlatPenaltyEngine(flat, 1e-2, 1e-3)]
    optimizers = [optimizer_cls(p, lr=1e-2) for p in (ref, flat)]
    for step in range(3):
        for params, engine, optimizer in zip((ref, flat), engines, optimizers):
            _gradients(params, seed=step)
            engine.add_grads_()
            optimizer.step()
            engine.prox_(optimizer)
        np.testing.assert_allclose([float(v) for v in engines[1].values()],
                                   [float(v) for v in engines[0].values()], rtol=1e-5)
        for a, b in zip(ref, flat):
            assert torch.equal(a, b)
    assert engines[1]._flat is not None  # the buffer was used
    engines[1].close()
    assert engines[1]._flat is None
    assert all(p.untyped_storage().nbytes() == p.numel() * p.element_size() for p in flat)


@pytest.mark.parametrize("l1_method", ["proximal", "subgradient"])
def test_in_loss_gradients_come_through_the_values_only(l1_method):
    # in_loss: the values carry the gradients, add_grads_ adds nothing (else they count twice)
    params = _params(_models(1)[0])
    lam1, lam2 = 0.1, 0.2
    PenaltyEngine(params, lam1, lam2, l1_method=l1_method).add_grads_()
    expected = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    engine = PenaltyEngine(params, lam1, lam2, l1_method=l1_method, in_loss=True)
    l1, l2 = engine.values()
    terms = lam2 * l2 + (lam1 * l1 if l1_method == "subgradient" else 0.0)
    terms.backward()
    engine.add_grads_()
    for p, g in zip(params, expected):
        torch.testing.assert_close(p.grad, g)


def test_the_flat_engine_takes_a_new_optimizers_learning_rate():
    # a new optimizer (here SGD, whose threshold is lr·λ1) replaces the buffer's one
    models = _models(1)[0]
    ref, flat = _params(models), _params(models)
    engines = [PenaltyEngine(ref, 1e-2, 0.0), FlatPenaltyEngine(flat, 1e-2, 0.0)]
    for lr in (1e-2, 0.5):
        optimizers = [torch.optim.SGD(p, lr=lr) for p in (ref, flat)]
        for params, engine, optimizer in zip((ref, flat), engines, optimizers):
            _gradients(params, seed=0)
            optimizer.step()
            engine.prox_(optimizer)
        for a, b in zip(ref, flat):
            assert torch.equal(a, b)
