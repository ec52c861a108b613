"""Pure tensor functions for the soft-regularization terms.

Nothing here knows about estimators: every function takes tensors (or an
``nn.Module`` / ``torch.optim.Optimizer`` where the formula needs one) and
returns tensors. The estimators in :mod:`sk_softreg` combine them into the
training objective

.. math::

    L(\\theta) = \\frac{1}{|B|}\\sum_{i \\in B} \\ell_i
        + \\alpha \\frac{1}{|B|}\\sum_{i \\in B} \\mathrm{KL}_i
        + \\lambda_1 \\sum_{w \\in W} |w| + \\lambda_2 \\sum_{w \\in W} w^2 .

The weight penalties and the proximal step use ``torch._foreach_*`` kernels
where they are the fastest way to touch every parameter tensor.
"""

import math

import torch
import torch.nn.functional as F

__all__ = [
    "select_penalized",
    "l1_penalty",
    "l2_penalty",
    "add_l2_grad_",
    "soft_threshold",
    "prox_l1_",
    "prox_thresholds",
    "kl_from_uniform",
    "kl_to_uniform",
    "gaussian_soft_kl",
    "clamp_log_var",
    "LOG_VAR_MIN",
    "LOG_VAR_MAX",
]

#: Bounds on a predicted log-variance: variances in [1e-6, 1e6].
LOG_VAR_MIN = math.log(1e-6)
LOG_VAR_MAX = math.log(1e6)

PENALIZE_OPTIONS = ("weights", "all")


def select_penalized(module, penalize="weights"):
    """Return the parameters of ``module`` that the weight penalties act on.

    Parameters
    ----------
    module : torch.nn.Module
        The network.
    penalize : {"weights", "all"} or callable, default="weights"
        ``"weights"`` selects every trainable parameter with ``ndim > 1``
        (convolution and linear kernels) and leaves biases and normalization
        parameters alone. ``"all"`` selects every trainable parameter. A
        callable ``(name, param) -> bool`` chooses freely.

    Returns
    -------
    params : list of torch.nn.Parameter
    """
    if penalize == "weights":
        keep = _is_weight
    elif penalize == "all":
        keep = _is_any
    elif callable(penalize):
        keep = penalize
    else:
        raise ValueError(
            f"penalize must be 'weights', 'all' or a callable (name, param) -> bool; "
            f"got {penalize!r}."
        )
    return [p for name, p in module.named_parameters() if p.requires_grad and keep(name, p)]


def _is_weight(name, param):
    return param.ndim > 1


def _is_any(name, param):
    return True


def l1_penalty(params):
    """Sum of absolute values over a list of tensors.

    .. math:: \\Omega_1(W) = \\sum_{w \\in W} |w|

    Parameters
    ----------
    params : list of torch.Tensor

    Returns
    -------
    torch.Tensor
        A 0-d tensor, differentiable (subgradient ``sign(w)``, 0 at 0).
    """
    if not params:
        return torch.zeros(())
    # abs + sum per tensor: on CPU two vectorized passes beat torch's 1-norm kernel
    return torch.stack([p.abs().sum() for p in params]).sum()


def l2_penalty(params):
    """Sum of squares over a list of tensors.

    .. math:: \\Omega_2(W) = \\sum_{w \\in W} w^2

    Its gradient is ``2 w``: torch's ``weight_decay`` equals ``2 * lambda2``.

    Parameters
    ----------
    params : list of torch.Tensor

    Returns
    -------
    torch.Tensor
        A 0-d tensor, differentiable.
    """
    if not params:
        return torch.zeros(())
    return torch.stack(torch._foreach_norm(params, 2)).square().sum()


@torch.no_grad()
def add_l2_grad_(params, lambda2):
    """Add the gradient of ``lambda2 * l2_penalty(params)`` to each tensor's ``.grad``.

    .. math:: \\nabla_w \\big(\\lambda_2 \\textstyle\\sum w^2\\big) = 2 \\lambda_2 w

    One ``torch._foreach_add_`` for the whole list: the same gradient as
    backpropagating through :func:`l2_penalty`, without the backward pass
    through the norm. A tensor without a gradient gets ``2 * lambda2 * w``.

    Parameters
    ----------
    params : list of torch.Tensor
        Leaf tensors; their ``.grad`` is modified in place.
    lambda2 : float
    """
    with_grad = [p for p in params if p.grad is not None]
    if with_grad:
        torch._foreach_add_([p.grad for p in with_grad], with_grad, alpha=2.0 * lambda2)
    for p in params:
        if p.grad is None:
            p.grad = p.detach() * (2.0 * lambda2)


def soft_threshold(w, t):
    """Soft-thresholding operator, the proximal map of ``t * |w|``.

    .. math:: S_t(w) = \\operatorname{sign}(w) \\max(|w| - t, 0)

    Parameters
    ----------
    w : torch.Tensor
    t : float or torch.Tensor
        Threshold, a scalar or a tensor broadcastable to ``w``; ``t >= 0``.

    Returns
    -------
    torch.Tensor
    """
    return torch.sign(w) * torch.clamp_min(torch.abs(w) - t, 0)


@torch.no_grad()
def prox_l1_(params, thresholds):
    """Apply :func:`soft_threshold` in place to each tensor of ``params``.

    Uses the identity :math:`S_t(w) = w - \\operatorname{clip}(w, -t, t)`, which
    gives exact zeros wherever :math:`|w| \\le t`: one ``clamp`` and one
    in-place subtraction per tensor (plus the negated threshold for a
    per-coordinate one), fewer passes over memory than ``torch._foreach_*``
    minimum/maximum kernels on the CPU.

    Parameters
    ----------
    params : list of torch.Tensor
        Modified in place.
    thresholds : list of (float or torch.Tensor)
        One threshold per tensor: a scalar, or a tensor of the tensor's shape
        (per-coordinate thresholds, as for Adam).
    """
    for p, t in zip(params, thresholds):
        if torch.is_tensor(t):
            p.sub_(torch.clamp(p, min=-t, max=t))
        else:
            t = float(t)
            p.sub_(p.clamp(-t, t))


@torch.no_grad()
def prox_thresholds(optimizer, params, lambda1):
    """Per-tensor soft thresholds for a proximal L1 step after ``optimizer.step()``.

    The threshold is taken in the optimizer's own metric:

    - optimizers whose state holds ``exp_avg_sq`` (Adam, AdamW, NAdam, ...):

      .. math:: t = \\frac{\\eta \\lambda_1}{\\sqrt{\\hat v} + \\epsilon},
                \\qquad \\hat v = \\frac{v}{1 - \\beta_2^{k}}

      per coordinate, with ``v = max_exp_avg_sq`` under amsgrad;
    - every other optimizer (SGD, ...): :math:`t = \\eta \\lambda_1`.

    With these thresholds the fixed points of "step then prox" satisfy the
    optimality conditions of the L1-penalized objective, so ``lambda1`` means
    the same for SGD and Adam (ProxGen, Yun et al. 2021).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer that has just stepped on ``params``.
    params : list of torch.Tensor
    lambda1 : float

    Returns
    -------
    thresholds : list of (float or torch.Tensor)
        One entry per tensor, for :func:`prox_l1_`.
    """
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    thresholds = []
    # per-coordinate (Adam-like) thresholds, computed with one foreach kernel per op
    slots, vs, groups, steps = [], [], [], []
    for p in params:
        group = group_of.get(id(p))
        if group is None:  # not optimized: leave it alone
            thresholds.append(0.0)
            continue
        state = optimizer.state.get(p, {})
        v = state.get("max_exp_avg_sq") if group.get("amsgrad") else None
        if v is None:
            v = state.get("exp_avg_sq")
        if v is None:
            thresholds.append(float(group["lr"]) * lambda1)
            continue
        slots.append(len(thresholds))
        thresholds.append(None)
        vs.append(v)
        groups.append(group)
        steps.append(state["step"])
    if vs:
        shifts, scales = [], []
        for group, step in zip(groups, _as_floats(steps)):
            # t = lr·λ1·root / (sqrt(v) + eps·root), root = sqrt(1 - β2^k): four passes over v
            root = math.sqrt(1.0 - group["betas"][1] ** step)
            shifts.append(float(group["eps"]) * root)
            scales.append(float(group["lr"]) * lambda1 * root)
        denoms = torch._foreach_sqrt(vs)
        torch._foreach_add_(denoms, shifts)
        torch._foreach_reciprocal_(denoms)
        torch._foreach_mul_(denoms, scales)
        for slot, denom in zip(slots, denoms):
            thresholds[slot] = denom
    return thresholds


def _as_floats(values):
    """Numbers or 0-d tensors as floats, reading tensors off an accelerator once per device.

    Fused (and capturable) Adam keeps its step counts on the parameters' device;
    reading them one by one would synchronize with the GPU once per tensor.
    """
    floats = [None] * len(values)
    on_device = {}
    for i, value in enumerate(values):
        if torch.is_tensor(value) and value.device.type != "cpu":
            on_device.setdefault(value.device, []).append(i)
        else:
            floats[i] = float(value)
    for indices in on_device.values():
        read = torch.stack([values[i] for i in indices]).tolist()
        for i, value in zip(indices, read):
            floats[i] = float(value)
    return floats


def kl_from_uniform(logits):
    """KL from the uniform distribution to the predicted class distribution.

    .. math:: \\mathrm{KL}(u \\,\\|\\, p) = -\\frac{1}{K}\\sum_k \\log p_k - \\log K

    Adding ``alpha * KL(u || p)`` to cross-entropy equals ``(1 + alpha)`` times
    label smoothing with ``eps = alpha / (1 + alpha)``, minus a constant.
    Computed from ``log_softmax``, so it stays finite for any logit gap.

    Parameters
    ----------
    logits : torch.Tensor of shape (n, K)

    Returns
    -------
    torch.Tensor of shape (n,)
        Non-negative; 0 iff the prediction is uniform.
    """
    log_p = F.log_softmax(logits, dim=-1)
    return -log_p.mean(dim=-1) - math.log(logits.shape[-1])


def kl_to_uniform(logits):
    """KL from the predicted class distribution to the uniform distribution.

    .. math:: \\mathrm{KL}(p \\,\\|\\, u) = \\sum_k p_k \\log p_k + \\log K
              = \\log K - H(p)

    The confidence penalty of Pereyra et al. (2017). Computed from
    ``log_softmax``.

    Parameters
    ----------
    logits : torch.Tensor of shape (n, K)

    Returns
    -------
    torch.Tensor of shape (n,)
        In ``[0, log K]``.
    """
    log_p = F.log_softmax(logits, dim=-1)
    return (log_p.exp() * log_p).sum(dim=-1) + math.log(logits.shape[-1])


def gaussian_soft_kl(y, mu, log_var, tau):
    """KL from the soft target N(y, tau^2) to the prediction N(mu, sigma^2).

    .. math::

        \\mathrm{KL}\\big(\\mathcal N(y, \\tau^2) \\,\\|\\, \\mathcal N(\\mu, \\sigma^2)\\big)
        = \\tfrac12 \\left[ s - \\log \\tau^2
          + \\frac{\\tau^2 + (y - \\mu)^2}{\\sigma^2} - 1 \\right],
        \\qquad s = \\log \\sigma^2 .

    Non-negative, and 0 iff ``mu == y`` and ``sigma == tau``. Its minimum over
    ``sigma^2`` is at ``tau^2 + (y - mu)^2``; as ``tau -> 0`` it becomes the
    heteroscedastic Gaussian negative log-likelihood.

    Parameters
    ----------
    y, mu, log_var : torch.Tensor of one shape
        Target, predicted mean and predicted log-variance ``s``.
    tau : float
        Standard deviation of the soft target, ``tau > 0``.

    Returns
    -------
    torch.Tensor
        Elementwise KL, the shape of ``y``.
    """
    tau2 = float(tau) ** 2
    return 0.5 * (log_var - math.log(tau2) + (tau2 + (y - mu).square()) * torch.exp(-log_var) - 1.0)


def clamp_log_var(log_var):
    """Clamp a log-variance to ``[log 1e-6, log 1e6]`` for numerical stability."""
    return log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)
