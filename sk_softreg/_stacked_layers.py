"""A direct stacked forward for the regressor's default module.

:class:`~sk_softreg._stacked._Stack` runs a module for all members at once
with ``torch.func.vmap``, which works for any module made of layers that
``vmap`` supports. For :class:`~sk_softreg.modules.GaussianMLP` (the
regressor's default) this module computes the same output directly on the
stacked weights, ``(n_members, batch, features)`` at a time, with
``torch.baddbmm`` and one fused head, which measures faster on a CPU
(``benchmarks/search.md``). Its dropout is
:func:`~sk_softreg.modules.dropout16` on the whole ``(n_members, batch,
units)`` tensor; the members' masks are the stack's own in either path.
"""

import torch
from torch import nn

from .modules import Dropout16, GaussianMLP, dropout16, dropout_free_pair

__all__ = ["direct_forward", "stacked_linear"]

#: the layers of a GaussianMLP body that the direct forward knows
_BODY_LAYERS = (nn.Linear, nn.ReLU, nn.Dropout, Dropout16)


def stacked_linear(x, weight, bias=None):
    """``x @ weight.T + bias`` for each member: ``x`` is ``(m, batch, in)``,
    ``weight`` ``(m, out, in)``, ``bias`` ``(m, out)`` or None; returns ``(m, batch, out)``."""
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _gaussian_mlp(module, params, X, dropout_free=False):
    """:meth:`GaussianMLP.forward <sk_softreg.modules.GaussianMLP.forward>` on stacked weights."""

    def apply(index, layer, x):
        if isinstance(layer, nn.Linear):
            return stacked_linear(x, params[f"body.{index}.weight"], params.get(f"body.{index}.bias"))
        if isinstance(layer, nn.Dropout):  # Dropout16, or nn.Dropout in a module saved before it
            return dropout16(x, layer.p, layer.training)
        return layer(x)  # nn.ReLU

    if dropout_free:
        h, clean = dropout_free_pair(module.body, X, apply)
    else:
        h = X
        for index, layer in enumerate(module.body):
            h = apply(index, layer, h)
    # the two heads as one: the means, then the log-variances
    weight = torch.cat([params["mean.weight"], params["log_var.weight"]], dim=1)
    bias = torch.cat([params["mean.bias"], params["log_var.bias"]], dim=1)
    out = stacked_linear(h, weight, bias)
    if not dropout_free:
        return out
    return out, (out if clean is None else stacked_linear(clean, weight, bias))


def direct_forward(module):
    """The direct stacked forward for ``module``, or None where the stack uses ``vmap``.

    Returns ``forward(params, X, **kwargs)`` for a :class:`GaussianMLP` itself
    (not a subclass, which may change ``forward``) whose body holds only
    ``nn.Linear``, ``nn.ReLU`` and dropout layers (:class:`~sk_softreg.modules.Dropout16`,
    or ``nn.Dropout`` in a module saved before it).
    """
    if type(module) is not GaussianMLP:
        return None
    if any(type(layer) not in _BODY_LAYERS for layer in module.body):
        return None

    def forward(params, X, dropout_free=False):
        return _gaussian_mlp(module, params, X, dropout_free=dropout_free)

    return forward
