"""flatten_ and FlatWeights at their edges (sk_softreg._flat).

What the flat buffer declines, when it stops being intact, and what its
proximal step does where the step counts differ; test_flat_weights.py covers
the fits.
"""

import pytest
import torch
from test_flat_weights import _params, _stepped
from torch import nn

from sk_softreg import _numba_loops
from sk_softreg._flat import flatten_


def _declines(params, optimizer):
    storages = [p.untyped_storage().data_ptr() for p in params]
    assert flatten_(params, optimizer) is None
    assert [p.untyped_storage().data_ptr() for p in params] == storages  # nothing moved


def test_flatten_declines_integer_tensors():
    params = [nn.Parameter(torch.arange(6).reshape(2, 3), requires_grad=False),
              nn.Parameter(torch.arange(4), requires_grad=False)]
    _declines(params, torch.optim.SGD(params, lr=0.1))


def test_flatten_declines_tensors_sharing_one_storage():
    # two Parameters on one storage (tied weights): separate views would untie them
    first = nn.Parameter(torch.randn(3, 4))
    tied = nn.Parameter(first.data)
    params = [first, tied]
    _declines(params, torch.optim.SGD(params, lr=0.1))
    assert tied.data_ptr() == first.data_ptr()


def test_flatten_declines_tensors_the_optimizer_does_not_hold():
    params = _params((3, 4), (2, 5))
    others = _params((3,), seed=1)
    _declines(params, torch.optim.SGD(others, lr=0.1))


def test_flatten_declines_moments_of_another_dtype():
    params = _params((3, 4), (2, 5))
    optimizer = _stepped(params)
    state = optimizer.state[params[1]]
    state["exp_avg_sq"] = state["exp_avg_sq"].double()
    _declines(params, optimizer)


def test_flatten_holds_channels_last_3d_weights():
    params = _params((4, 2, 3, 3, 3), (5, 4))
    params[0].data = params[0].data.contiguous(memory_format=torch.channels_last_3d)
    optimizer = _stepped(params)
    before = [(p.detach().clone(), p.stride()) for p in params]
    flat = flatten_(params, optimizer)
    assert flat is not None
    for p, (value, stride) in zip(params, before):
        assert p.stride() == stride and torch.equal(p, value)


@pytest.mark.parametrize("index", [0, -1])
def test_intact_checks_every_parameter_and_moment(index):
    """Replacing any one tensor, not only the first, ends the buffer's use."""
    params = _params((3, 4), (2, 5), (6,))
    optimizer = _stepped(params)
    flat = flatten_(params, optimizer)
    assert flat.intact(optimizer)
    state = optimizer.state[params[index]]
    state["exp_avg_sq"] = state["exp_avg_sq"].clone()
    assert flat.intact() and not flat.intact(optimizer)

    params = _params((3, 4), (2, 5), (6,))
    optimizer = _stepped(params)
    flat = flatten_(params, optimizer)
    params[index].data = params[index].data.clone()
    assert not flat.intact() and not flat.intact(optimizer)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled loop", "torch kernels"])
def test_prox_with_unequal_step_counts_changes_nothing(compiled, monkeypatch):
    """Where the tensors' step counts differ, prox_l1_ returns False and leaves the
    weights as they are, so the engine falls back to its per-tensor step."""
    if compiled and not _numba_loops.applies(torch.zeros(2)):
        pytest.skip("numba's compiled loops are unavailable")
    if not compiled:
        monkeypatch.setattr(_numba_loops, "_kernels", False)
    params = _params((3, 4), (2, 5))
    optimizer = _stepped(params)
    flat = flatten_(params, optimizer)
    assert flat._compiled is compiled
    optimizer.state[params[1]]["step"] += 1
    before = flat.weights.clone()
    assert flat.prox_l1_(10.0) is False
    assert torch.equal(flat.weights, before)
    # with equal counts the same call does threshold
    optimizer.state[params[1]]["step"] -= 1
    assert flat.prox_l1_(10.0) is True
    assert int((flat.weights == 0).sum()) > 0
