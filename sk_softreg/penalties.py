"""Pure tensor functions for the soft-regularization terms.

Nothing here knows about estimators: every function takes tensors (or an
``nn.Module`` / ``torch.optim.Optimizer`` where the formula needs one) and
returns tensors. The estimators in :mod:`sk_softreg` combine them into the
training objective

.. math::

    L(\\theta) = \\frac{1}{|B|}\\sum_{i \\in B} \\ell_i
        + \\alpha \\frac{1}{|B|}\\sum_{i \\in B} \\mathrm{KL}_i
        + \\lambda_1 \\sum_{w \\in W} |w| + \\lambda_2 \\sum_{w \\in W} w^2
        + \\lambda_f \\sum_j \\lVert W_1[:, j] \\rVert_2 ,

with :math:`W_1` the weight of the network's first ``nn.Linear`` layer
(see :func:`input_layer`).

The weight penalties and the proximal step use ``torch._foreach_*`` kernels
where they are the fastest way to touch every parameter tensor.
"""

import math

import torch

from ._divergences import (
    LOG_VAR_MAX,
    LOG_VAR_MIN,
    bernoulli_kl_from_half,
    bernoulli_kl_to_half,
    clamp_log_var,
    gaussian_soft_kl,
    kl_from_uniform,
    kl_to_uniform,
    soft_target_std,
    weighted_mean,
)

__all__ = [
    "select_penalized",
    "l1_penalty",
    "l2_penalty",
    "add_l2_grad_",
    "soft_threshold",
    "prox_l1_",
    "prox_thresholds",
    "second_moment_key",
    "adam_threshold_coefficients",
    "thresholds_from_moments",
    "input_layer",
    "group_l2_penalty",
    "prox_group_l2_",
    "kl_from_uniform",
    "kl_to_uniform",
    "bernoulli_kl_from_half",
    "bernoulli_kl_to_half",
    "gaussian_soft_kl",
    "soft_target_std",
    "clamp_log_var",
    "weighted_mean",
    "LOG_VAR_MIN",
    "LOG_VAR_MAX",
]



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
        v = state.get(second_moment_key(group))
        if v is None:
            thresholds.append(float(group["lr"]) * lambda1)
            continue
        slots.append(len(thresholds))
        thresholds.append(None)
        vs.append(v)
        groups.append(group)
        steps.append(state["step"])
    if vs:
        coefficients = [
            adam_threshold_coefficients(group, step, lambda1)
            for group, step in zip(groups, _as_floats(steps))
        ]
        for slot, threshold in zip(slots, thresholds_from_moments(vs, coefficients)):
            thresholds[slot] = threshold
    return thresholds


def second_moment_key(group):
    """The optimizer-state key of the second moments the Adam threshold reads.

    ``"max_exp_avg_sq"`` for a parameter group with ``amsgrad``, else
    ``"exp_avg_sq"`` (Adam, AdamW, NAdam, RAdam, ...).
    """
    return "max_exp_avg_sq" if group.get("amsgrad") else "exp_avg_sq"


def adam_threshold_coefficients(group, step, lambda1):
    """The scalars ``(scale, shift)`` of the Adam threshold ``t = scale / (sqrt(v) + shift)``.

    With :math:`r = \\sqrt{1 - \\beta_2^{k}}`,

    .. math:: \\frac{\\eta \\lambda_1}{\\sqrt{v / r^2} + \\epsilon}
              = \\frac{\\eta \\lambda_1 r}{\\sqrt{v} + \\epsilon r},

    so the bias correction costs no pass over ``v``.

    Parameters
    ----------
    group : dict
        The optimizer's parameter group (``lr``, ``betas``, ``eps``).
    step : float
        The step count ``k`` of the tensors' state.
    lambda1 : float

    Returns
    -------
    scale, shift : float
    """
    root = math.sqrt(1.0 - group["betas"][1] ** step)
    return float(group["lr"]) * lambda1 * root, float(group["eps"]) * root


@torch.no_grad()
def thresholds_from_moments(moments, coefficients):
    """Per-coordinate thresholds ``scale / (sqrt(v) + shift)`` for each tensor ``v``.

    Four ``torch._foreach_*`` passes for the whole list: sqrt, add, reciprocal,
    multiply; each coordinate gets the same operations whatever the list.

    Parameters
    ----------
    moments : list of torch.Tensor
        Second-moment estimates ``v`` (Adam's ``exp_avg_sq``).
    coefficients : list of (float, float)
        ``(scale, shift)`` per tensor, from :func:`adam_threshold_coefficients`.

    Returns
    -------
    thresholds : list of torch.Tensor
    """
    scales, shifts = zip(*coefficients)
    thresholds = torch._foreach_sqrt(moments)
    torch._foreach_add_(thresholds, list(shifts))
    torch._foreach_reciprocal_(thresholds)
    torch._foreach_mul_(thresholds, list(scales))
    return thresholds


@torch.no_grad()
def input_layer(module, example):
    """The first submodule holding parameters that ``module(example)`` calls.

    "First" is in forward order: forward pre-hooks record the calls of one
    forward pass (in eval mode, without gradients) on ``example``. Modules
    without parameters of their own (``nn.Flatten``, ``nn.Dropout``,
    activations, containers) are skipped. The weight penalty on the inputs
    (:func:`group_l2_penalty`) applies when this layer is an ``nn.Linear``
    whose ``in_features`` equals the number of input features: its column
    ``j`` then holds every weight that input ``j`` enters the network through.

    Parameters
    ----------
    module : torch.nn.Module
        The network; its train/eval mode is restored afterwards.
    example : torch.Tensor
        A batch the network accepts (zeros are fine), on the module's device.

    Returns
    -------
    name : str or None
        The layer's name in ``module.named_modules()`` (``""`` for ``module``
        itself); ``None`` if no module with parameters was called.
    layer : torch.nn.Module or None

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> input_layer(net, torch.zeros(2, 1, 2, 2))
    ('1', Linear(in_features=4, out_features=3, bias=True))
    """
    names = {}
    for name, sub in module.named_modules():
        if next(sub.parameters(recurse=False), None) is not None:
            names[sub] = name
    called = []

    def record(sub, args):
        if not called:
            called.append(sub)

    handles = [sub.register_forward_pre_hook(record) for sub in names]
    was_training = module.training
    module.eval()
    try:
        module(example)
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    if not called:
        return None, None
    return names[called[0]], called[0]


def group_l2_penalty(weight):
    """Sum of the Euclidean norms of the columns of a 2-D weight (group lasso).

    .. math:: \\Omega_G(W) = \\sum_j \\lVert W[:, j] \\rVert_2

    For the weight of an ``nn.Linear`` layer (shape ``(out_features,
    in_features)``) column ``j`` holds the weights of input ``j``, so the
    penalty has one group per input feature.

    Parameters
    ----------
    weight : torch.Tensor of shape (m, n)

    Returns
    -------
    torch.Tensor
        A 0-d tensor.
    """
    return torch.linalg.vector_norm(weight, dim=0).sum()


@torch.no_grad()
def prox_group_l2_(weight, steps, lam, newton_steps=2):
    """Group soft-threshold of the columns of ``weight``, in place, in a diagonal metric.

    For each column :math:`w = W[:, j]` (after the optimizer step) it computes
    the proximal point of :math:`\\lambda \\lVert u \\rVert_2` in the metric of
    the per-coordinate step sizes :math:`\\eta` (the optimizer's own metric,
    as for :func:`prox_thresholds`):

    .. math::

        u = \\arg\\min_u \\; \\tfrac12 \\sum_i \\frac{(u_i - w_i)^2}{\\eta_i}
            + \\lambda \\lVert u \\rVert_2 .

    Its optimality condition :math:`(u_i - w_i)/\\eta_i + \\lambda u_i /
    \\lVert u \\rVert_2 = 0` gives

    - :math:`u = 0` exactly iff :math:`\\lVert w / \\eta \\rVert_2 \\le \\lambda`;
    - otherwise :math:`u_i = w_i / (1 + \\eta_i \\mu)` with :math:`\\mu =
      \\lambda / \\lVert u \\rVert_2`, the unique root of the concave function
      :math:`\\varphi(\\mu) = 1/\\lVert u(\\mu) \\rVert_2 - \\mu / \\lambda`.

    With one step size per column (SGD, or Adam with equal :math:`\\eta_i`)
    the root is :math:`\\mu = \\lambda / (\\lVert w \\rVert_2 - \\eta\\lambda)`:
    the familiar :math:`u = w \\, (1 - \\eta\\lambda / \\lVert w \\rVert_2)_+`.
    For unequal step sizes, Newton's method on :math:`\\varphi` starts from
    :math:`\\mu_0 = \\lambda / (\\eta_{\\min} (\\lVert w/\\eta \\rVert_2 -
    \\lambda))`, where :math:`\\varphi \\le 0`; on a concave function it then
    decreases monotonically to the root, so every iterate shrinks at least as
    much as the exact prox and the zero test above stays exact.

    Parameters
    ----------
    weight : torch.Tensor of shape (m, n)
        Modified in place; one group per column.
    steps : float or torch.Tensor of shape (m, n)
        Per-coordinate step sizes :math:`\\eta \\ge 0` (for Adam,
        ``prox_thresholds(optimizer, [weight], 1.0)[0]``), or one scalar.
        A coordinate whose step is 0 (a learning rate of 0, say) does not
        move, and its column is zeroed only if that coordinate is already 0.
        A scalar ``<= 0`` leaves ``weight`` unchanged.
    lam : float
        The penalty weight :math:`\\lambda \\ge 0`.
    newton_steps : int, default=2
        Newton iterations for unequal step sizes.

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([[3.0, 0.1], [4.0, 0.1]])
    >>> prox_group_l2_(w, 1.0, 1.0)
    >>> w
    tensor([[2.4000, 0.0000],
            [3.2000, 0.0000]])
    """
    if lam <= 0:
        return
    if not torch.is_tensor(steps):
        if steps <= 0:
            return
        norms = torch.linalg.vector_norm(weight, dim=0)
        weight.mul_(torch.clamp_min(1.0 - steps * lam / norms, 0.0))  # norm 0 -> -inf -> 0
        return
    moving = steps > 0
    # w / eta, with a frozen coordinate (eta = 0) infinite unless it is 0: it keeps its column
    scaled = torch.where(moving, weight / steps, torch.where(weight == 0, 0.0, math.inf))
    scaled_norm = torch.linalg.vector_norm(scaled, dim=0)
    keep = scaled_norm > lam
    smallest = torch.where(moving, steps, math.inf).amin(dim=0)
    mu = lam / (smallest * torch.clamp_min(scaled_norm - lam, torch.finfo(weight.dtype).tiny))
    for _ in range(newton_steps):
        shrink = torch.reciprocal(1.0 + steps * mu)
        u2 = (weight * shrink).square()
        inv_norm = torch.rsqrt(torch.clamp_min(u2.sum(dim=0), torch.finfo(weight.dtype).tiny))
        slope = inv_norm.pow(3) * (u2 * steps * shrink).sum(dim=0) - 1.0 / lam
        mu = mu - (inv_norm - mu / lam) / slope
    weight.mul_(torch.where(keep, torch.reciprocal(1.0 + steps * mu), 0.0))


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
