"""The output-side terms of the objective: the KL divergences (α) and weighted means.

Pure tensor functions, re-exported by :mod:`sk_softreg.penalties`; each
states its formula.
"""

import math

import torch
import torch.nn.functional as F

__all__ = [
    "LOG_VAR_MAX",
    "LOG_VAR_MIN",
    "bernoulli_kl_from_half",
    "bernoulli_kl_to_half",
    "clamp_log_var",
    "gaussian_soft_kl",
    "kl_from_uniform",
    "kl_to_uniform",
    "soft_target_std",
    "weighted_mean",
]

#: Bounds on a predicted log-variance: variances in [1e-6, 1e6].
LOG_VAR_MIN = math.log(1e-6)
LOG_VAR_MAX = math.log(1e6)


def kl_from_uniform(logits):
    """KL from the uniform distribution to the predicted class distribution.

    .. math:: \\mathrm{KL}(u \\,\\|\\, p) = -\\frac{1}{K}\\sum_k \\log p_k - \\log K

    Adding ``alpha * KL(u || p)`` to cross-entropy gives ``(1 + alpha)`` times
    the label-smoothed cross-entropy with ``eps = alpha / (1 + alpha)``, minus
    ``alpha * log K``:

    .. math:: \\mathrm{CE} + \\alpha\\,\\mathrm{KL}(u \\,\\|\\, p)
              = (1 + \\alpha)\\,\\mathrm{CE}_{\\varepsilon} - \\alpha \\log K.

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


def bernoulli_kl_from_half(logits):
    """KL from Bernoulli(1/2) to each label's predicted Bernoulli(p), p = sigmoid(z).

    The multilabel form of :func:`kl_from_uniform` (label smoothing), one
    value per label:

    .. math::

        \\mathrm{KL}\\big(\\mathrm{B}(\\tfrac12) \\,\\|\\, \\mathrm{B}(p)\\big)
        = -\\tfrac12 \\log p - \\tfrac12 \\log(1 - p) - \\log 2
        = \\tfrac12 \\big[\\operatorname{softplus}(-z) + \\operatorname{softplus}(z)\\big] - \\log 2 .

    It equals :func:`kl_from_uniform` of the two-class logits ``(0, z)``.
    Adding ``alpha`` times it to the binary cross-entropy gives ``(1 + alpha)``
    times the binary cross-entropy against the smoothed target
    ``(1 - eps) * y + eps / 2``, ``eps = alpha / (1 + alpha)``, minus
    ``alpha * log 2``. Computed with ``softplus``, so it stays finite for any
    logit; its gradient ``p - 1/2`` does not vanish at saturation.

    Parameters
    ----------
    logits : torch.Tensor
        The logits ``z``, one per label (any shape, e.g. ``(n, L)``).

    Returns
    -------
    torch.Tensor
        Elementwise KL, the shape of ``logits``; non-negative, 0 iff ``z == 0``.
    """
    return 0.5 * (F.softplus(-logits) + F.softplus(logits)) - math.log(2.0)


def bernoulli_kl_to_half(logits):
    """KL from each label's predicted Bernoulli(p), p = sigmoid(z), to Bernoulli(1/2).

    The multilabel form of :func:`kl_to_uniform` (the confidence penalty),
    one value per label:

    .. math::

        \\mathrm{KL}\\big(\\mathrm{B}(p) \\,\\|\\, \\mathrm{B}(\\tfrac12)\\big)
        = p \\log p + (1 - p) \\log(1 - p) + \\log 2 = \\log 2 - H(p),

    with ``log p = -softplus(-z)`` and ``log(1 - p) = -softplus(z)``, so it
    stays finite for any logit. It equals :func:`kl_to_uniform` of the
    two-class logits ``(0, z)``.

    Parameters
    ----------
    logits : torch.Tensor
        The logits ``z``, one per label (any shape, e.g. ``(n, L)``).

    Returns
    -------
    torch.Tensor
        Elementwise KL, the shape of ``logits``; in ``[0, log 2]``.
    """
    p = torch.sigmoid(logits)
    return math.log(2.0) - p * F.softplus(-logits) - (1.0 - p) * F.softplus(logits)


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
