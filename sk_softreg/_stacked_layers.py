"""Direct stacked forwards for the estimators' default modules.

:class:`~sk_softreg._stacked._Stack` runs a module for all members at once
with ``torch.func.vmap``, which works for any module made of layers that
``vmap`` supports. For the two default modules this module computes the same
output directly on the stacked weights, which measures faster on a CPU
(``benchmarks/search.md``):

- :class:`~sk_softreg.modules.GaussianMLP` (the regressor's), ``(n_members,
  batch, features)`` at a time, with ``torch.baddbmm`` and one fused head. Its
  dropout is :func:`~sk_softreg.modules.dropout16` on the whole ``(n_members,
  batch, units)`` tensor; the members' masks are the stack's own in either path.
- :class:`~sk_softreg.modules.SoftRegCNN` (the classifier's): the members'
  convolutions as one grouped convolution over ``(batch, n_members ×
  channels, H, W)``, in ``channels_last`` on a CPU (as the classifier's own
  fits store their convolution weights), and its fully connected head with
  ``torch.baddbmm``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .modules import Dropout16, GaussianMLP, SoftRegCNN, dropout16, dropout_free_pair

__all__ = ["direct_forward", "stacked_linear"]

#: the layers of a GaussianMLP body that the direct forward knows
_BODY_LAYERS = (nn.Linear, nn.ReLU, nn.Dropout, Dropout16)
#: those of a SoftRegCNN's features and of its classifier after the Flatten
_FEATURE_LAYERS = (nn.Conv2d, nn.ReLU, nn.MaxPool2d)
_HEAD_LAYERS = (nn.Linear, nn.ReLU, nn.Dropout)


def stacked_linear(x, weight, bias=None):
    """``x @ weight.T + bias`` for each member: ``x`` is ``(m, batch, in)``,
    ``weight`` ``(m, out, in)``, ``bias`` ``(m, out)`` or None; returns ``(m, batch, out)``.

    A narrow layer (``4 * out <= in``, such as the regressor's heads and the
    CNN's last layer) computes its weight gradient as ``grad.T @ x`` per member
    (:class:`_NarrowStackedLinear`).
    """
    if 4 * weight.shape[1] <= weight.shape[2] and torch.is_grad_enabled():
        return _NarrowStackedLinear.apply(x, weight, bias)
    return _product(x, weight, bias)


def _product(x, weight, bias):
    """The forward of :func:`stacked_linear`, one ``bmm`` or ``baddbmm``."""
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


class _NarrowStackedLinear(torch.autograd.Function):
    """:func:`stacked_linear` with the weight gradient as ``grad.T @ x``, ``(m, out, in)``.

    Autograd's ``baddbmm`` backward computes it as ``x.T @ grad``, ``(m, in,
    out)``, and transposes it; on a CPU a batched product whose result has few
    columns is several times slower (``benchmarks/search.md``).
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        # under autocast the forward ran in a lower precision, which grad has
        x, weight = (t.to(grad.dtype) for t in ctx.saved_tensors)
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad
        grad_x = grad.bmm(weight) if needs_x else None
        grad_weight = grad.transpose(1, 2).bmm(x) if needs_weight else None
        grad_bias = grad.sum(1) if ctx.has_bias and needs_bias else None
        return grad_x, grad_weight, grad_bias


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


def _soft_reg_cnn(module, params, X):
    """:meth:`SoftRegCNN.forward <sk_softreg.modules.SoftRegCNN.forward>` on stacked weights.

    ``X`` is ``(m, batch, C, H, W)``. The features run on ``(batch, m * C, H, W)``:
    a convolution is one grouped convolution (``m`` times its own groups), and
    ReLU and max-pooling act per channel; the flattened features are then
    ``(m, batch, C' * H' * W')``, in each member's own flatten order.
    """
    m, batch = X.shape[:2]
    layout = torch.channels_last if X.device.type == "cpu" else torch.contiguous_format
    h = X.transpose(0, 1).reshape(batch, m * X.shape[2], *X.shape[3:])
    h = h.contiguous(memory_format=layout)
    for index, layer in enumerate(module.features):
        if isinstance(layer, nn.Conv2d):
            weight = params[f"features.{index}.weight"]
            weight = weight.reshape(m * weight.shape[1], *weight.shape[2:])
            bias = params.get(f"features.{index}.bias")
            h = F.conv2d(
                h, weight.contiguous(memory_format=layout),
                None if bias is None else bias.reshape(-1),
                layer.stride, layer.padding, layer.dilation, m * layer.groups,
            )
        else:  # nn.ReLU, nn.MaxPool2d
            h = layer(h)
    h = h.reshape(batch, m, -1).transpose(0, 1)
    for index, layer in enumerate(module.classifier):
        if isinstance(layer, nn.Linear):
            h = stacked_linear(
                h, params[f"classifier.{index}.weight"], params.get(f"classifier.{index}.bias")
            )
        elif isinstance(layer, nn.Dropout):  # each member's elements draw their own
            h = F.dropout(h, layer.p, layer.training)
        elif not isinstance(layer, nn.Flatten):
            h = layer(h)  # nn.ReLU
    return h


def _is_plain_cnn(module):
    """Whether ``module`` is a :class:`SoftRegCNN` itself made of the layers that
    :func:`_soft_reg_cnn` knows (zero-padded convolutions, a leading ``nn.Flatten``)."""
    if type(module) is not SoftRegCNN:
        return False
    features, head = list(module.features), list(module.classifier)
    return (
        all(type(layer) in _FEATURE_LAYERS for layer in features)
        and all(layer.padding_mode == "zeros" for layer in features if type(layer) is nn.Conv2d)
        and bool(head) and type(head[0]) is nn.Flatten
        and (head[0].start_dim, head[0].end_dim) == (1, -1)
        and all(type(layer) in _HEAD_LAYERS for layer in head[1:])
    )


def direct_forward(module):
    """The direct stacked forward for ``module``, or None where the stack uses ``vmap``.

    Returns ``forward(params, X, **kwargs)`` for a :class:`GaussianMLP` itself
    (not a subclass, which may change ``forward``) whose body holds only
    ``nn.Linear``, ``nn.ReLU`` and dropout layers (:class:`~sk_softreg.modules.Dropout16`,
    or ``nn.Dropout`` in a module saved before it), and ``forward(params, X)``
    for a :class:`SoftRegCNN` itself of convolutions, ReLUs and max-pooling,
    then a flatten, linear layers, ReLUs and dropout.
    """
    if type(module) is GaussianMLP:
        if any(type(layer) not in _BODY_LAYERS for layer in module.body):
            return None

        def forward(params, X, dropout_free=False):
            return _gaussian_mlp(module, params, X, dropout_free=dropout_free)

        return forward
    if _is_plain_cnn(module):
        return lambda params, X: _soft_reg_cnn(module, params, X)
    return None
