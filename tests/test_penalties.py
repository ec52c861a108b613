"""The penalty functions against hand computations (DESIGN.md sections 1-3)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from sk_softreg.penalties import (
    bernoulli_kl_from_half,
    bernoulli_kl_to_half,
    clamp_log_var,
    gaussian_soft_kl,
    kl_from_uniform,
    kl_to_uniform,
    l1_penalty,
    l2_penalty,
    prox_l1_,
    prox_thresholds,
    select_penalized,
    soft_target_std,
    soft_threshold,
    weighted_mean,
)


def test_l1_l2_values_and_gradients():
    a = torch.tensor([[1.0, -2.0], [0.5, 0.0]], requires_grad=True)
    b = torch.tensor([[-3.0]], requires_grad=True)
    assert l1_penalty([a, b]).item() == pytest.approx(6.5)
    assert l2_penalty([a, b]).item() == pytest.approx(1 + 4 + 0.25 + 9)
    l2_penalty([a, b]).backward()
    torch.testing.assert_close(a.grad, 2 * a.detach())  # weight_decay = 2 * lambda2
    a.grad = None
    l1_penalty([a]).backward()
    torch.testing.assert_close(a.grad, torch.tensor([[1.0, -1.0], [1.0, 0.0]]))


def test_empty_parameter_list_gives_zero():
    assert l1_penalty([]).item() == 0.0
    assert l2_penalty([]).item() == 0.0


def test_soft_threshold_matches_formula():
    w = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5])
    expected = torch.tensor([-1.6, -0.1, 0.0, 0.0, 1.1])
    torch.testing.assert_close(soft_threshold(w, 0.4), expected)
    params = [w.clone()]
    prox_l1_(params, [0.4])
    torch.testing.assert_close(params[0], expected)


def test_prox_threshold_sgd_is_lr_times_lambda():
    p = nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = torch.optim.SGD([p], lr=0.05)
    p.grad = torch.tensor([0.1, 0.1])
    opt.step()
    (t,) = prox_thresholds(opt, [p], lambda1=0.2)
    assert t == pytest.approx(0.05 * 0.2)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_prox_threshold_adam_is_preconditioned(amsgrad):
    p = nn.Parameter(torch.tensor([1.0, -1.0, 0.5]))
    lr, eps, beta2 = 0.01, 1e-8, 0.999
    opt = torch.optim.Adam([p], lr=lr, eps=eps, betas=(0.9, beta2), amsgrad=amsgrad)
    grads = [torch.tensor([0.3, -0.1, 2.0]), torch.tensor([0.1, 0.2, -1.0])]
    v = torch.zeros(3)
    v_max = torch.zeros(3)
    for g in grads:
        p.grad = g
        opt.step()
        v = beta2 * v + (1 - beta2) * g**2
        v_max = torch.maximum(v_max, v)
    v_used = v_max if amsgrad else v
    v_hat = v_used / (1 - beta2 ** len(grads))
    expected = lr * 0.5 / (v_hat.sqrt() + eps)
    (t,) = prox_thresholds(opt, [p], lambda1=0.5)
    torch.testing.assert_close(t, expected)


def test_prox_mixes_scalar_and_tensor_thresholds():
    a, b = torch.tensor([1.0, -0.2]), torch.tensor([0.5, -3.0])
    prox_l1_([a, b], [0.5, torch.tensor([1.0, 1.0])])
    torch.testing.assert_close(a, torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(b, torch.tensor([0.0, -2.0]))


def test_kl_from_uniform_hand_values():
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])
    p = torch.softmax(logits, dim=1)
    expected = (-(torch.log(p)).mean(dim=1) - math.log(3)).to(torch.float32)
    kl = kl_from_uniform(logits)
    torch.testing.assert_close(kl, expected)
    assert kl[0].item() == pytest.approx(0.0, abs=1e-7)
    # explicit sum_k u_k log(u_k / p_k) for the second row: p = (1/2, 1/4, 1/4)
    manual = sum(1 / 3 * math.log((1 / 3) / q) for q in (0.5, 0.25, 0.25))
    assert kl[1].item() == pytest.approx(manual, rel=1e-6)


def test_kl_to_uniform_hand_values():
    logits = torch.tensor([[math.log(2.0), 0.0, 0.0]])
    manual = sum(q * math.log(q / (1 / 3)) for q in (0.5, 0.25, 0.25))
    assert kl_to_uniform(logits).item() == pytest.approx(manual, rel=1e-6)


@pytest.mark.parametrize("kl", [kl_from_uniform, kl_to_uniform])
def test_classifier_kls_are_nonnegative_and_finite_at_large_gaps(kl):
    torch.manual_seed(0)
    logits = torch.randn(500, 7) * 20
    logits[0] = torch.tensor([200.0, 0, 0, 0, 0, 0, 0])  # softmax underflows in float32
    values = kl(logits)
    assert torch.isfinite(values).all()
    assert (values >= -1e-6).all()


def test_confidence_penalty_is_bounded_by_log_k():
    logits = torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    assert kl_to_uniform(logits).item() == pytest.approx(math.log(4), rel=1e-5)


def test_bernoulli_kls_hand_values():
    # p = sigmoid(log 3) = 3/4: sum over the two outcomes of a log(a / b)
    z = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    from_half = sum(0.5 * math.log(0.5 / q) for q in (0.75, 0.25))
    to_half = sum(q * math.log(q / 0.5) for q in (0.75, 0.25))
    assert bernoulli_kl_from_half(z)[0, 0].item() == pytest.approx(from_half, rel=1e-12)
    assert bernoulli_kl_to_half(z)[0, 0].item() == pytest.approx(to_half, rel=1e-12)
    assert bernoulli_kl_from_half(z)[0, 1].item() == bernoulli_kl_to_half(z)[0, 1].item() == 0.0


def test_bernoulli_kls_are_the_two_class_kls_of_logits_0_and_z():
    # alpha means for a label what it means for one multiclass label with two classes
    z = torch.linspace(-30, 30, 61)
    two_class = torch.stack([torch.zeros_like(z), z], dim=1)
    torch.testing.assert_close(bernoulli_kl_from_half(z), kl_from_uniform(two_class))
    torch.testing.assert_close(bernoulli_kl_to_half(z), kl_to_uniform(two_class))


def test_bce_plus_bernoulli_kl_is_scaled_label_smoothing():
    # BCE + a KL(B(1/2) || B(p)) = (1 + a) BCE against (1 - e) y + e / 2, e = a / (1 + a), - a log 2
    torch.manual_seed(0)
    z, y, a = torch.randn(50, 4, dtype=torch.float64) * 3, torch.randint(0, 2, (50, 4)).double(), 0.3
    eps = a / (1 + a)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    left = bce(z, y, reduction="none") + a * bernoulli_kl_from_half(z)
    right = (1 + a) * bce(z, (1 - eps) * y + eps / 2, reduction="none") - a * math.log(2)
    torch.testing.assert_close(left, right)


@pytest.mark.parametrize("kl", [bernoulli_kl_from_half, bernoulli_kl_to_half])
def test_bernoulli_kls_are_nonnegative_and_finite_at_large_logits(kl):
    z = torch.tensor([-200.0, -40.0, 0.0, 40.0, 200.0])
    values = kl(z)
    assert torch.isfinite(values).all() and (values >= -1e-6).all()
    if kl is bernoulli_kl_to_half:
        assert values[0].item() == pytest.approx(math.log(2), rel=1e-6)


def test_gaussian_soft_kl_formula_and_minimum():
    y, mu, tau = torch.tensor([1.0]), torch.tensor([0.5]), 0.2
    log_var = torch.tensor([math.log(0.3)])
    expected = 0.5 * (math.log(0.3) - math.log(0.04) + (0.04 + 0.25) / 0.3 - 1)
    assert gaussian_soft_kl(y, mu, log_var, tau).item() == pytest.approx(expected, rel=1e-6)
    # zero iff mu == y and sigma == tau
    assert gaussian_soft_kl(y, y, torch.log(torch.tensor([0.04])), tau).item() == pytest.approx(
        0.0, abs=1e-6
    )
    # optimum over sigma^2 is tau^2 + (y - mu)^2
    grid = torch.linspace(math.log(0.01), math.log(2.0), 2001)
    values = gaussian_soft_kl(y.expand(2001), mu.expand(2001), grid, tau)
    best = grid[values.argmin()].exp().item()
    assert best == pytest.approx(0.04 + 0.25, rel=1e-2)


def test_gaussian_soft_kl_is_nonnegative():
    rng = np.random.default_rng(0)
    y, mu, s = (torch.tensor(rng.normal(size=1000), dtype=torch.float32) for _ in range(3))
    assert (gaussian_soft_kl(y, mu, s, 0.1) >= -1e-6).all()


def test_select_penalized_excludes_biases_and_norms():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
    names = {id(p): n for n, p in net.named_parameters()}
    weights = {names[id(p)] for p in select_penalized(net, "weights")}
    assert weights == {"0.weight", "3.weight"}
    assert len(select_penalized(net, "all")) == len(list(net.parameters()))
    chosen = select_penalized(net, _only_linear)
    assert [names[id(p)] for p in chosen] == ["3.weight"]
    with pytest.raises(ValueError, match="penalize"):
        select_penalized(net, "biases")


def _only_linear(name, param):
    return name.startswith("3.") and param.ndim == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prox_threshold_with_fused_adam_on_cuda():
    # fused Adam keeps its step counts on the GPU; the thresholds are the same
    p = nn.Parameter(torch.tensor([1.0, -1.0, 0.5], device="cuda"))
    q = nn.Parameter(torch.tensor([[0.2, 0.4]], device="cuda"))
    opt = torch.optim.Adam([p, q], lr=0.01, fused=True)
    for _ in range(3):
        p.grad, q.grad = torch.ones_like(p) * 0.3, torch.ones_like(q) * -0.2
        opt.step()
    assert opt.state[p]["step"].device.type == "cuda"
    tp, tq = prox_thresholds(opt, [p, q], lambda1=0.5)
    for param, t in ((p, tp), (q, tq)):
        v_hat = opt.state[param]["exp_avg_sq"] / (1 - 0.999**3)
        torch.testing.assert_close(t, 0.01 * 0.5 / (v_hat.sqrt() + 1e-8))


def test_select_penalized_skips_frozen_parameters():
    # only trainable parameters are penalized: a frozen layer keeps its weights
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    net[0].weight.requires_grad_(False)
    assert [id(p) for p in select_penalized(net, "weights")] == [id(net[1].weight)]
    assert id(net[0].weight) not in {id(p) for p in select_penalized(net, "all")}


def test_prox_threshold_amsgrad_reads_the_running_maximum():
    # a zero gradient lowers exp_avg_sq to beta2 times its maximum: amsgrad's threshold uses the maximum
    p = nn.Parameter(torch.tensor([1.0, -1.0]))
    lr, beta2 = 0.01, 0.9
    opt = torch.optim.Adam([p], lr=lr, betas=(0.9, beta2), amsgrad=True)
    for g in (torch.tensor([2.0, -1.0]), torch.zeros(2)):
        p.grad = g
        opt.step()
    v_max = (1 - beta2) * torch.tensor([4.0, 1.0])  # the first step's v
    expected = lr * 0.5 / ((v_max / (1 - beta2**2)).sqrt() + 1e-8)
    (t,) = prox_thresholds(opt, [p], lambda1=0.5)
    torch.testing.assert_close(t, expected, rtol=1e-5, atol=0)  # thresholds are ~1e-3


def test_prox_threshold_adam_adds_eps_to_the_bias_corrected_root():
    # t = lr * lambda1 / (sqrt(v_hat) + eps): with a large eps the placement of eps shows
    p = nn.Parameter(torch.tensor([1.0, -1.0, 0.5]))
    lr, eps, beta2 = 0.01, 0.1, 0.999
    opt = torch.optim.Adam([p], lr=lr, eps=eps, betas=(0.9, beta2))
    g = torch.tensor([0.3, -0.1, 2.0])
    for _ in range(2):
        p.grad = g
        opt.step()
    v_hat = g**2  # two equal gradients: the bias correction recovers g**2 exactly
    (t,) = prox_thresholds(opt, [p], lambda1=0.5)
    torch.testing.assert_close(t, lr * 0.5 / (v_hat.sqrt() + eps))


def test_prox_thresholds_are_zero_for_parameters_the_optimizer_does_not_hold():
    p, q = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=0.1)
    tp, tq = prox_thresholds(opt, [p, q], lambda1=0.5)
    assert tp == pytest.approx(0.05)
    assert tq == 0.0


def test_soft_target_std_subtracts_tau_squared_and_floors_at_c_tau():
    # sigma_y = sqrt(max(exp(s) - tau^2, (c tau)^2)), c = floor
    tau = 0.5
    s = torch.tensor([1.25, 0.75, 0.25, 0.01], dtype=torch.float64).log()
    torch.testing.assert_close(
        soft_target_std(s, tau), torch.tensor([1.0, 0.5**0.5, 0.5, 0.5], dtype=torch.float64)
    )
    torch.testing.assert_close(
        soft_target_std(s, tau, floor=0.5),
        torch.tensor([1.0, 0.5**0.5, 0.25, 0.25], dtype=torch.float64),
    )


def test_clamp_log_var_keeps_variances_in_1e_minus_6_to_1e6():
    s = torch.tensor([-100.0, math.log(2e-6), 0.0, math.log(5e5), 100.0], dtype=torch.float64)
    torch.testing.assert_close(
        clamp_log_var(s).exp(), torch.tensor([1e-6, 2e-6, 1.0, 5e5, 1e6], dtype=torch.float64)
    )


def test_weighted_mean_averages_trailing_dims_then_weighs_rows():
    # sum_i w_i v_i / sum_i w_i, with v_i the mean of row i's outputs
    values = torch.tensor([[1.0, 3.0], [4.0, 8.0], [10.0, 0.0]])  # row means 2, 6, 5
    weights = torch.tensor([1.0, 3.0, 0.0])
    assert weighted_mean(values, weights).item() == pytest.approx((1 * 2 + 3 * 6) / 4)
    assert weighted_mean(values[:, 0], weights).item() == pytest.approx((1 * 1 + 3 * 4) / 4)


def test_weighted_mean_of_a_batch_of_zero_weights_is_zero():
    assert weighted_mean(torch.tensor([1.0, 2.0]), torch.zeros(2)).item() == 0.0
