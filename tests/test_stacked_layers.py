"""The direct stacked forwards of GaussianMLP and SoftRegCNN against vmap, and Dropout16."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from sk_softreg._stacked_layers import direct_forward, stacked_linear
from sk_softreg.modules import Dropout16, GaussianMLP, SoftRegCNN, dropout16


def _stacked(n_members, **kwargs):
    torch.manual_seed(0)
    members = [GaussianMLP(**kwargs) for _ in range(n_members)]
    for member in members:  # non-zero log-variance heads, so that both heads are checked
        nn.init.normal_(member.log_var.weight)
        nn.init.normal_(member.log_var.bias)
    params, _ = stack_module_state(members)
    return members[0], params


def _vmapped(module, params, X, **kwargs):
    def call(p, x):
        return functional_call(module, p, (x,), kwargs)

    return vmap(call, randomness="different")(params, X)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n_out", [2, 12])  # a narrow layer (own backward) and a wide one
def test_stacked_linear_gradients_equal_the_members_linear_layers(n_out, bias):
    torch.manual_seed(0)
    X = torch.randn(3, 7, 12, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, n_out, 12, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, n_out, dtype=torch.float64, requires_grad=True) if bias else None
    out = stacked_linear(X, weight, b)
    assert ("NarrowStackedLinear" in type(out.grad_fn).__name__) == (n_out == 2)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [X, weight] + ([b] if bias else []), grad)
    expected_out = torch.stack(
        [nn.functional.linear(X[k], weight[k], None if b is None else b[k]) for k in range(3)]
    )
    expected = torch.autograd.grad(expected_out, [X, weight] + ([b] if bias else []), grad)
    torch.testing.assert_close(out, expected_out)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    # only the weights train (the inputs of a first layer): no gradient for the inputs
    (g_weight,) = torch.autograd.grad(stacked_linear(X.detach(), weight, b), [weight], grad)
    torch.testing.assert_close(g_weight, expected[1])
    assert torch.autograd.gradcheck(stacked_linear, (X, weight, b))


@pytest.mark.parametrize("hidden_units", [(16,), (16, 8)])
def test_direct_forward_matches_vmap(hidden_units):
    module, params = _stacked(3, n_features=5, n_outputs=2, hidden_units=hidden_units, dropout=0.3)
    X = torch.randn(3, 7, 5)
    forward = direct_forward(module)
    module.eval()
    torch.testing.assert_close(forward(params, X), _vmapped(module, params, X))
    # in training, the dropout-free output of the pair is the eval-mode output
    module.train()
    out, clean = forward(params, X, dropout_free=True)
    module.eval()
    torch.testing.assert_close(clean, _vmapped(module, params, X))
    assert out.shape == clean.shape == (3, 7, 4)
    assert not torch.allclose(out, clean)  # dropout acted on the training output


def test_direct_forward_without_dropout_layers():
    module, params = _stacked(2, n_features=3, n_outputs=1, hidden_units=(4,), dropout=0)
    X = torch.randn(2, 6, 3)
    out, clean = direct_forward(module)(params, X, dropout_free=True)
    torch.testing.assert_close(out, _vmapped(module, params, X))
    torch.testing.assert_close(clean, out)


def test_direct_forward_only_for_gaussian_mlp_itself():
    class Sub(GaussianMLP):
        def forward(self, X):
            return super().forward(X) * 2

    assert direct_forward(Sub(n_features=2)) is None
    other = GaussianMLP(n_features=2)
    other.body[1] = nn.Tanh()
    assert direct_forward(other) is None
    assert direct_forward(nn.Linear(2, 1)) is None
    assert direct_forward(GaussianMLP(n_features=2)) is not None


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout16_keeps_one_minus_p_of_every_lane(p):
    torch.manual_seed(0)
    x = torch.ones(4, 250_000)
    out = dropout16(x, p)
    kept = out != 0
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / (1 - p)))
    # four 16-bit draws come from each 64-bit word: each position must be kept at 1 - p
    lanes = kept.reshape(-1, 4).float().mean(dim=0)
    assert torch.all((lanes - (1 - p)).abs() < 0.005), lanes
    # different rows (members) get different masks
    assert not torch.equal(kept[0], kept[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dropout16_keeps_exactly_the_draws_at_or_above_the_threshold(dtype):
    # the mask is u >= round(p * 2**16) - 2**15 on the 16-bit draws u, boundary included
    p, n = 0.3, 1_000_000  # about 15 draws sit exactly on the threshold
    torch.manual_seed(3)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    bits = words.view(torch.int16)[:n]
    threshold = round(p * 2**16) - 2**15
    assert (bits == threshold).any()
    x = torch.randn(n).to(dtype)
    torch.manual_seed(3)
    out = dropout16(x, p)
    assert out.dtype == dtype
    expected = torch.where(bits >= threshold, x * torch.tensor(1 / (1 - p), dtype=dtype), 0)
    assert torch.equal(out, expected)


def test_dropout16_gradient_is_the_mask():
    torch.manual_seed(1)
    x = torch.randn(3, 10, requires_grad=True)
    out = dropout16(x, 0.25)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() / 0.75)


def test_dropout16_under_vmap_draws_per_member():
    torch.manual_seed(2)
    out = vmap(lambda x: dropout16(x, 0.3), randomness="different")(torch.ones(3, 7, 5))
    assert out.shape == (3, 7, 5)
    assert not torch.equal(out[0] != 0, out[1] != 0)


def test_dropout16_layer():
    x = torch.randn(4, 6)
    layer = Dropout16(0.4)
    assert isinstance(layer, nn.Dropout)  # found by dropout_layers, switched by dropout_off
    torch.testing.assert_close(layer.eval()(x), x)
    layer.train()
    torch.testing.assert_close(Dropout16(0.0)(x), x)
    assert torch.equal(Dropout16(1.0)(x), torch.zeros_like(x))
    out = layer(x)
    assert torch.all((out == 0) | torch.isclose(out, x / 0.6))
    assert all(type(m) is Dropout16 for m in GaussianMLP(n_features=3, dropout=0.2).body[2::3])


def test_direct_forward_of_a_module_saved_with_nn_dropout():
    module, params = _stacked(2, n_features=3, n_outputs=1, hidden_units=(8,), dropout=0.3)
    module.body[2] = nn.Dropout(0.3)  # a GaussianMLP pickled before Dropout16
    assert direct_forward(module) is not None
    module.eval()
    X = torch.randn(2, 5, 3)
    torch.testing.assert_close(direct_forward(module)(params, X), _vmapped(module, params, X))


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 5, 7), (2, 1, 6)])
def test_cnn_direct_forward_and_gradients_match_vmap(input_shape):
    """The members' convolutions as one grouped convolution (channels_last on a CPU):
    the outputs and the gradients of every member's weights are vmap's."""
    torch.manual_seed(0)
    kwargs = dict(input_shape=input_shape, n_classes=4, channels=(3, 5), hidden_units=6)
    members = [SoftRegCNN(**kwargs) for _ in range(3)]
    params, _ = stack_module_state(members)
    module = members[0].eval()
    forward = direct_forward(module)
    assert forward is not None
    X = torch.randn(3, 7, *input_shape)
    out, ref = forward(params, X), _vmapped(module, params, X)
    torch.testing.assert_close(out, ref)
    grads = torch.autograd.grad(out.square().sum(), list(params.values()))
    ref_grads = torch.autograd.grad(ref.square().sum(), list(params.values()))
    for name, g, r in zip(params, grads, ref_grads):
        torch.testing.assert_close(g, r, msg=name)


def test_cnn_direct_forward_draws_dropout_per_member_in_training():
    torch.manual_seed(0)
    members = [SoftRegCNN(channels=(2,), hidden_units=64, dropout=0.5) for _ in range(2)]
    params, _ = stack_module_state(members)
    params = {k: v.detach() for k, v in params.items()}
    params = {k: torch.cat([v[:1], v[:1]]) for k, v in params.items()}  # two equal members
    X = torch.randn(1, 9, 1, 8, 8).expand(2, 9, 1, 8, 8)
    module = members[0].train()
    out = direct_forward(module)(params, X)
    assert not torch.allclose(out[0], out[1])  # their own masks
    torch.testing.assert_close(direct_forward(module.eval())(params, X)[0], module(X[0]))


def test_cnn_direct_forward_only_for_the_plain_soft_reg_cnn():
    class Sub(SoftRegCNN):
        pass

    assert direct_forward(Sub()) is None
    batch_norm = SoftRegCNN()
    batch_norm.features[1] = nn.BatchNorm2d(32)
    assert direct_forward(batch_norm) is None
    circular = SoftRegCNN()
    circular.features[0].padding_mode = "circular"
    assert direct_forward(circular) is None
