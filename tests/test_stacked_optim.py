"""StackedAdam: each row of the buffer steps as that model's own torch Adam / AdamW, and
its proximal L1 thresholds are those of ``penalties.prox_thresholds`` for that Adam."""

import functools

import pytest
import torch

from sk_softreg._stacked_optim import StackedAdam, stackable_adam_reason
from sk_softreg.penalties import prox_thresholds

N_MODELS, N_PARAMS, STEPS = 3, 7, 6
#: which models step in each step (model 1 sits out steps 2 and 3, model 2 step 0)
ACTIVE = [[True, True, False], [True, True, True], [True, False, True],
          [True, False, True], [True, True, True], [True, True, True]]


#: Adam with ``decoupled_weight_decay=True``: AdamW's update under Adam's class
_ADAM_DECOUPLED = functools.partial(torch.optim.Adam, decoupled_weight_decay=True)


@pytest.mark.parametrize("cls, weight_decay", [
    (torch.optim.Adam, 0.0), (torch.optim.Adam, 0.1), (torch.optim.AdamW, 0.1),
    pytest.param(_ADAM_DECOUPLED, 0.1, id="Adam-decoupled-0.1"),
])
def test_rows_step_as_their_own_adam_and_thresholds_match(cls, weight_decay):
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(N_MODELS, N_PARAMS, generator=gen, dtype=torch.float64)
    grads = torch.randn(STEPS, N_MODELS, N_PARAMS, generator=gen, dtype=torch.float64)
    lambda1 = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    kwargs = dict(lr=0.01, betas=(0.8, 0.95), eps=1e-3, weight_decay=weight_decay)

    flat = start.clone().requires_grad_(True)
    stacked = StackedAdam.like(cls([torch.zeros(1)], **kwargs), flat)
    own = [start[m].clone().requires_grad_(True) for m in range(N_MODELS)]
    optimizers = [cls([p], foreach=False, **kwargs) for p in own]
    for step, active in enumerate(ACTIVE):
        flat.grad = grads[step].clone()
        on = torch.tensor(active)
        stacked.step(on)
        thresholds = stacked.l1_thresholds(lambda1, on, slice(0, N_PARAMS))
        for m, (p, optimizer) in enumerate(zip(own, optimizers)):
            if not active[m]:
                assert torch.all(thresholds[m] == 0)
                continue
            p.grad = grads[step, m].clone()
            optimizer.step()
            expected = prox_thresholds(optimizer, [p], float(lambda1[m]))[0]
            torch.testing.assert_close(thresholds[m], torch.as_tensor(expected, dtype=torch.float64)
                                       .expand(N_PARAMS), rtol=1e-10, atol=1e-12)
    for m, p in enumerate(own):
        torch.testing.assert_close(flat.detach()[m], p.detach(), rtol=1e-10, atol=1e-12)
        assert int(stacked.steps[m]) == sum(a[m] for a in ACTIVE)


class _MyAdam(torch.optim.Adam):
    """An Adam subclass (its step may be anything): not reproduced by StackedAdam."""


def _adam_with_two_groups(params):
    return torch.optim.Adam([{"params": params[:1]}, {"params": params[1:]}])


@pytest.mark.parametrize("make, reason", [
    (lambda p: _MyAdam(p), "the optimizer _MyAdam"),
    (lambda p: torch.optim.SGD(p, lr=0.1), "the optimizer SGD"),
    (_adam_with_two_groups, "several parameter groups"),
    (lambda p: torch.optim.Adam(p, amsgrad=True), "amsgrad=True"),
    (lambda p: torch.optim.Adam(p, maximize=True), "maximize=True"),
    (lambda p: torch.optim.AdamW(p, differentiable=True), "differentiable=True"),
    (lambda p: torch.optim.Adam(p, lr=torch.tensor(0.01)), "a tensor learning rate"),
    (lambda p: torch.optim.Adam(p), None),
    (lambda p: torch.optim.AdamW(p, weight_decay=0.1), None),
])
def test_only_plain_adam_and_adamw_are_stackable(make, reason):
    """Every option that changes Adam's update (and any other optimizer, an Adam
    subclass included) is named as the reason the fits do not stack."""
    params = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    got = stackable_adam_reason(make(params))
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got
