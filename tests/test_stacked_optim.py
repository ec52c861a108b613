"""StackedAdam: each row of the buffer steps as that model's own torch Adam / AdamW, and
its proximal L1 thresholds are those of ``penalties.prox_thresholds`` for that Adam."""

import pytest
import torch

from sk_softreg._stacked_optim import StackedAdam
from sk_softreg.penalties import prox_thresholds

N_MODELS, N_PARAMS, STEPS = 3, 7, 6
#: which models step in each step (model 1 sits out steps 2 and 3, model 2 step 0)
ACTIVE = [[True, True, False], [True, True, True], [True, False, True],
          [True, False, True], [True, True, True], [True, True, True]]


@pytest.mark.parametrize("cls, weight_decay", [(torch.optim.Adam, 0.0), (torch.optim.Adam, 0.1),
                                               (torch.optim.AdamW, 0.1)])
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
