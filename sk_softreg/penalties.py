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
import torch.nn.functional as F

__all__ = [
    "select_penalized",
    "l1_penalty",
    "l2_penalty",
    "add_l2_grad_",
    "soft_threshold",
    "prox_l1_",
    "prox_thresholds",
    "adam_threshold_coefficients",
    "thresholds_from_moments",
    "input_layer",
    "group_l2_penalty",
    "prox_group_l2_",
    "kl_from_uniform",
    "kl_to_uniform",
    "gaussian_soft_kl",
    "soft_target_std",
    "clamp_log_var",
    "weighted_mean",
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
        coefficients = [
            adam_threshold_coefficients(group, step, lambda1)
            for group, step in zip(groups, _as_floats(steps))
        ]
        for slot, threshold in zip(slots, thresholds_from_moments(vs, coefficients)):
            thresholds[slot] = threshold
    return thresholds


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
        Per-coordinate step sizes :math:`\\eta > 0` (for Adam,
        ``prox_thresholds(optimizer, [weight], 1.0)[0]``), or one scalar.
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
    scaled_norm = torch.linalg.vector_norm(weight / steps, dim=0)
    keep = scaled_norm > lam
    mu = lam / (steps.amin(dim=0) * torch.clamp_min(scaled_norm - lam, torch.finfo(weight.dtype).tiny))
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


def soft_target_std(log_var, tau, floor=1.0):
    """Std of y from a log-variance trained against the soft target N(y, tau^2).

    For a fixed ``x`` the expected KL of :func:`gaussian_soft_kl` is minimal at
    ``sigma^2 = tau^2 + E[(y - mu)^2 | x]``, so the std of ``y`` around ``mu``
    is

    .. math::

        \\sigma_y = \\sqrt{\\max\\big(\\sigma^2 - \\tau^2,\\; (c\\,\\tau)^2\\big)},
        \\qquad \\sigma^2 = e^{s},

    with ``c = floor``. The floor is tied to ``tau``, the target's resolution:
    where ``E[(y - mu)^2] << tau^2`` the KL's gradient in ``s``,
    ``(1 - (tau^2 + r^2) / sigma^2) / 2``, sees the residual only as a small
    fraction of ``tau^2``, so the head cannot resolve residual stds below
    about ``tau``; reporting them anyway makes the Gaussian NLL explode on
    test points where the head's sigma sits at ``tau``.

    Parameters
    ----------
    log_var : torch.Tensor
        Predicted log-variances ``s``.
    tau : float
        Standard deviation of the soft target, ``tau > 0``.
    floor : float, default=1.0
        The smallest std returned, as a fraction ``c`` of ``tau``.

    Returns
    -------
    torch.Tensor
        ``sigma_y``, the shape of ``log_var``.
    """
    tau2 = float(tau) ** 2
    return torch.sqrt(torch.clamp(torch.exp(log_var) - tau2, min=(float(floor) ** 2) * tau2))


def clamp_log_var(log_var):
    """Clamp a log-variance to ``[log 1e-6, log 1e6]`` for numerical stability."""
    return log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)


def weighted_mean(values, weights):
    """Weighted mean of per-sample values: the per-batch normalization of a weighted fit.

    .. math::

        \\bar v_w = \\frac{\\sum_{i \\in B} w_i \\, v_i}{\\sum_{i \\in B} w_i}

    as scikit-learn's ``MLPClassifier`` / ``MLPRegressor`` weight each batch.
    A sample's value is first averaged over its trailing dimensions (the
    outputs of a multi-output regressor). A batch whose weights are all 0
    has mean 0 instead of 0 / 0.

    Parameters
    ----------
    values : torch.Tensor of shape (n,) or (n, ...)
        Per-sample values, e.g. unreduced losses.
    weights : torch.Tensor of shape (n,)
        Non-negative sample weights.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    if values.ndim > 1:
        values = values.reshape(len(values), -1).mean(dim=1)
    weights = weights.to(values.dtype)
    total = weights.sum()
    return (weights * values).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)
