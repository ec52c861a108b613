"""The penalty engine: the weight penalties of one fit, behind one interface.

An engine holds the penalized weights of a fit and all the state their
penalties need, and does the three things the training step asks of them:

- :meth:`PenaltyEngine.values`: ``(Σ|w|, Σw²)`` without gradient, for the
  objective's value and the history;
- :meth:`PenaltyEngine.add_grads_`: after ``backward``, the gradient of the
  terms that are not applied by a proximal step, ``2·λ2·w`` (and
  ``λ1·sign(w)`` under ``l1_method="subgradient"``);
- :meth:`PenaltyEngine.prox_`: after ``optimizer.step()``, the soft-threshold
  step of the proximal L1 term.

:class:`PenaltyEngine` is the reference, written on the pure functions of
:mod:`sk_softreg.penalties`, tensor by tensor. It also takes parameters
stacked along a leading model axis, with one λ1 and λ2 per model
(``stacked=True``): every value is then per model, of shape ``(n_models,)``.
:class:`FlatPenaltyEngine` computes the same on one flat buffer of the
weights (:mod:`sk_softreg._flat`), with numba's compiled loops where they
are installed (:mod:`sk_softreg._numba_loops`); it takes single models on the CPU.
"""

import torch

from ._flat import flatten_
from .penalties import (
    add_l2_grad_,
    l1_penalty,
    l2_penalty,
    prox_l1_,
    prox_thresholds,
)

__all__ = ["FlatPenaltyEngine", "PenaltyEngine"]


class PenaltyEngine:
    """The weight penalties ``λ1·Σ|w| + λ2·Σw²`` of one fit, on :mod:`~sk_softreg.penalties`.

    Parameters
    ----------
    params : list of torch.Tensor
        The penalized weights (leaf tensors).
    lambda1, lambda2 : float or torch.Tensor
        The penalty weights; with ``stacked``, a float or one value per model
        (shape ``(n_models,)``).
    l1_method : {"proximal", "subgradient"}, default="proximal"
        ``"proximal"``: :meth:`prox_` applies λ1 after the optimizer's step;
        ``"subgradient"``: :meth:`add_grads_` adds ``λ1·sign(w)``.
    stacked : bool, default=False
        Every tensor in ``params`` has a leading model axis; sums and
        thresholds are taken per model.
    in_loss : bool, default=False
        :meth:`values` carries the gradients of the terms that no proximal
        step applies, and :meth:`add_grads_` does nothing: for training
        loops that scale or accumulate the loss's gradient (Accelerate).

    Examples
    --------
    >>> import torch
    >>> from sk_softreg._engine import PenaltyEngine
    >>> w = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
    >>> engine = PenaltyEngine([w], lambda1=0.1, lambda2=0.01)
    >>> [float(v) for v in engine.values()]
    [3.5, 5.25]
    """

    def __init__(
        self, params, lambda1=0.0, lambda2=0.0, l1_method="proximal", stacked=False, in_loss=False
    ):
        self.params = list(params)
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.proximal = l1_method == "proximal"
        self.stacked = stacked
        self.in_loss = in_loss

    def values(self):
        """``(Σ|w|, Σw²)`` of the penalized weights: without gradient, unless ``in_loss``.

        Returns
        -------
        l1, l2 : torch.Tensor or float
            0-d tensors (or floats), or of shape ``(n_models,)`` when stacked.
        """
        with torch.set_grad_enabled(self.in_loss and not self.proximal):
            l1 = _per_model_sum(self.params, torch.abs) if self.stacked else l1_penalty(self.params)
        with torch.set_grad_enabled(self.in_loss):
            l2 = (
                _per_model_sum(self.params, torch.square)
                if self.stacked
                else l2_penalty(self.params)
            )
        return l1, l2

    @torch.no_grad()
    def add_grads_(self):
        """Add ``2·λ2·w`` (and ``λ1·sign(w)`` under the subgradient method) to ``w.grad``.

        A weight without a gradient gets that gradient alone. Nothing with ``in_loss``.
        """
        if self.in_loss:
            return
        if self._active(self.lambda2):
            if self.stacked:
                _add_grad_(self.params, lambda p: p * _along_models(2.0 * self.lambda2, p))
            else:
                add_l2_grad_(self.params, self.lambda2)
        if self._active(self.lambda1) and not self.proximal:
            _add_grad_(self.params, lambda p: torch.sign(p) * _along_models(self.lambda1, p))

    def prox_(self, optimizer):
        """Soft-threshold the weights after ``optimizer.step()`` (proximal L1 only).

        The threshold is taken in the optimizer's metric
        (:func:`~sk_softreg.penalties.prox_thresholds`), with each model's λ1
        when stacked.
        """
        if not (self.proximal and self._active(self.lambda1)):
            return
        if self.stacked and torch.is_tensor(self.lambda1):
            unit = prox_thresholds(optimizer, self.params, 1.0)
            thresholds = [_along_models(self.lambda1, p) * t for p, t in zip(self.params, unit)]
        else:
            thresholds = prox_thresholds(optimizer, self.params, self.lambda1)
        prox_l1_(self.params, thresholds)

    def close(self):
        """End of the fit: release what the engine holds (nothing, here)."""

    @staticmethod
    def _active(value):
        return bool(value.any()) if torch.is_tensor(value) else bool(value)


class FlatPenaltyEngine(PenaltyEngine):
    """:class:`PenaltyEngine` on a flat buffer of the weights (single models, CPU).

    The first :meth:`prox_` (after the optimizer's first step, when Adam's
    second moments exist) moves the weights and their moments into one
    buffer each (:func:`~sk_softreg._flat.flatten_`); from then on a value
    or a proximal step is one kernel, or one compiled loop, over the buffer.
    Each coordinate goes through the same operations as in the reference, so
    the trained weights are the same; the sums are added in another order.
    Where the buffer does not apply, or once something replaced the
    weights or the optimizer, the reference's tensor-by-tensor code runs.
    :meth:`close` gives every tensor its own storage back.
    """

    def __init__(self, params, lambda1=0.0, lambda2=0.0, l1_method="proximal"):
        super().__init__(params, lambda1, lambda2, l1_method)
        self._flat = None
        self._tried = False

    def values(self):
        flat = self._flat
        if flat is not None and flat.intact():
            return flat.penalty_values(l1=True, l2=True)
        return super().values()

    def prox_(self, optimizer):
        if not (self.proximal and self.lambda1):
            return
        flat = self._buffer(optimizer)
        if flat is None or not flat.prox_l1_(self.lambda1):
            super().prox_(optimizer)

    def close(self):
        if self._flat is not None:
            self._flat.restore_()
            self._flat = None

    def _buffer(self, optimizer):
        """The fit's flat buffer, built on the first call, or None where it does not apply."""
        if not self._tried:
            self._tried = True
            self._flat = flatten_(self.params, optimizer)
        elif self._flat is not None and not self._flat.intact(optimizer):
            self.close()
        return self._flat


def _along_models(value, like):
    """``value`` (a float, or one value per model) broadcast over ``like``'s trailing axes."""
    if not torch.is_tensor(value):
        return value
    value = value.to(device=like.device, dtype=like.dtype)
    return value.reshape(-1, *([1] * (like.dim() - 1)))


def _per_model_sum(params, fn):
    """``Σ fn(w)`` over all of each model's coordinates: shape ``(n_models,)``."""
    return sum(fn(p).flatten(1).sum(1) for p in params)


def _add_grad_(params, gradient):
    """Add ``gradient(p)`` to each ``p.grad`` (or set it where there is none)."""
    for p in params:
        g = gradient(p.detach())
        if p.grad is None:
            p.grad = g
        else:
            p.grad.add_(g)
