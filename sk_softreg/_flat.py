"""The penalized weights as views of one flat buffer while a fit runs.

The proximal L1 step and the history's penalty values are elementwise work
over every penalized tensor. Done tensor by tensor, a small network pays one
kernel per tensor and operation, and on the CPU torch splits an elementwise
kernel over threads only above 32,768 elements, which most of a small
network's tensors are not. :func:`flatten_` stores the penalized weights, and
the optimizer's second moments that the Adam thresholds read, as views of one
buffer each; the same work is then one kernel over each buffer (or, with
numba installed, one compiled loop: :mod:`sk_softreg._numba_loops`).

Each coordinate goes through the same operations as tensor by tensor, so the trained
weights are bit-identical; only the sums reported in history are added up in
another order. The views keep each tensor's shape and strides (the default
CNN's ``channels_last`` convolution weights included).

Nothing outside the fit sees the buffers: :meth:`FlatWeights.restore_` gives
every tensor its own storage again when the fit ends. During the fit a
tensor's storage moves once, at the first proximal step, so a reference to
``param.data`` taken before then goes stale (as after ``module.to()``).
"""

import torch

from . import _numba_loops
from .penalties import (
    adam_threshold_coefficients,
    l1_penalty,
    l2_penalty,
    prox_l1_,
    second_moment_key,
    thresholds_from_moments,
)

__all__ = ["FlatWeights", "flatten_"]


class FlatWeights:
    """Penalized weights (and their second moments) living in flat buffers.

    Built by :func:`flatten_`; use :meth:`intact` before each use.

    Attributes
    ----------
    weights : torch.Tensor
        1-D buffer; each penalized parameter's ``data`` is a view of it.
    moments : torch.Tensor or None
        1-D buffer of the optimizer's second moments (``None`` for optimizers
        without them, such as SGD), laid out like ``weights``.
    """

    __slots__ = (
        "params", "weights", "moments", "optimizer", "group", "key", "_views", "_ptrs",
        "_compiled",
    )

    def __init__(self, params, weights, moments, optimizer, group, key, views):
        self.params = params
        self.weights = weights
        self.moments = moments
        self.optimizer = optimizer
        self.group = group
        self.key = key
        self._views = views
        self._ptrs = [p.data_ptr() for p in params]
        # asked once: the buffer keeps its device, dtype and layout while it lives
        self._compiled = _numba_loops.applies(weights)

    def intact(self, optimizer=None):
        """True while every parameter still lives in ``weights`` and, when
        ``optimizer`` is given, it is the optimizer flattened with and every
        second moment still lives in ``moments``.

        False once anything replaced them: ``param.data = ...``, ``module.to()``
        to another device or dtype, a new optimizer, ``load_state_dict`` on the
        optimizer.
        """
        if any(p.data_ptr() != ptr for p, ptr in zip(self.params, self._ptrs)):
            return False
        if optimizer is None:
            return True
        if optimizer is not self.optimizer:
            return False
        if self.key is None:
            return True
        state = optimizer.state
        return all(state.get(p, {}).get(self.key) is v for p, v in zip(self.params, self._views))

    def thresholds(self, lambda1):
        """The proximal L1 threshold for ``weights``, computed as
        :func:`~sk_softreg.penalties.prox_thresholds` computes it tensor by tensor:
        a tensor for Adam-like optimizers, ``lr·λ1`` otherwise.

        Returns None when the tensors' step counts differ (a tensor without a
        gradient skipped a step): one buffer then has no single threshold formula.
        """
        if self.key is None:
            return float(self.group["lr"]) * lambda1
        coefficients = self._coefficients(lambda1)
        if coefficients is None:
            return None
        return thresholds_from_moments([self.moments], [coefficients])[0]

    def prox_l1_(self, lambda1):
        """Soft-threshold ``weights`` in place with the thresholds of :meth:`thresholds`.

        Where :func:`sk_softreg._numba_loops.applies`, the Adam step is one compiled
        loop, with the same result per coordinate up to the rounding of the
        square root (the loop's is correctly rounded, torch's CPU kernel's not
        always).

        Returns
        -------
        bool
            False, and nothing changed, where :meth:`thresholds` is None.
        """
        if self.key is not None and self._compiled:
            coefficients = self._coefficients(lambda1)
            if coefficients is None:
                return False
            _numba_loops.soft_threshold_scaled_(self.weights, self.moments, *coefficients)
            return True
        with torch.no_grad():
            thresholds = self.thresholds(lambda1)
            if thresholds is None:
                return False
            prox_l1_([self.weights], [thresholds])
        return True

    def penalty_values(self, l1=True, l2=True):
        """``Σ|w|`` and ``Σw²`` over ``weights``, without gradient (None where not asked).

        Where :func:`sk_softreg._numba_loops.applies`, both come from one compiled
        loop, summed in float64, as Python floats; otherwise they are 0-d
        tensors from torch's kernels.
        """
        if self._compiled:
            sum_abs, sum_squares = _numba_loops.abs_and_square_sums(self.weights)
        else:
            with torch.no_grad():
                sum_abs = l1_penalty([self.weights]) if l1 else None
                sum_squares = l2_penalty([self.weights]) if l2 else None
        return (sum_abs if l1 else None), (sum_squares if l2 else None)

    def _coefficients(self, lambda1):
        """``(scale, shift)`` of the Adam threshold, or None where step counts differ."""
        state = self.optimizer.state
        # the engine builds the buffers on the CPU only: reading a
        # CPU step count with float() costs no device synchronization
        steps = {float(state[p]["step"]) for p in self.params}
        if len(steps) != 1:
            return None
        return adam_threshold_coefficients(self.group, steps.pop(), lambda1)

    @torch.no_grad()
    def restore_(self):
        """Give each parameter and moment still in the buffers its own storage again."""
        for p, ptr in zip(self.params, self._ptrs):
            if p.data_ptr() == ptr:
                p.data = p.data.clone(memory_format=torch.preserve_format)
        if self.key is not None:
            for p, v in zip(self.params, self._views):
                state = self.optimizer.state.get(p, {})
                if state.get(self.key) is v:
                    state[self.key] = v.clone(memory_format=torch.preserve_format)


@torch.no_grad()
def flatten_(params, optimizer):
    """Move ``params`` (and their second moments in ``optimizer``) into flat buffers.

    Applies when there are at least two tensors, all of one device and
    floating dtype, each dense (contiguous or ``channels_last``) and the sole
    user of its storage, all in one parameter group of ``optimizer``, and
    either all or none of them with a second moment of the same layout in the
    optimizer's state (Adam after its first step, or SGD).

    Parameters
    ----------
    params : list of torch.nn.Parameter
        Modified in place: each one's ``data`` becomes a view of the buffer,
        with the same values, shape and strides.
    optimizer : torch.optim.Optimizer

    Returns
    -------
    FlatWeights or None
        None, and nothing moved, where the conditions do not hold.
    """
    if len(params) < 2:
        return None
    first = params[0]
    if not first.is_floating_point() or any(
        p.device != first.device or p.dtype != first.dtype or not _sole_dense(p) for p in params
    ):
        return None
    if len({p.data_ptr() for p in params}) != len(params):
        return None
    groups = [g for g in optimizer.param_groups if any(q is first for q in g["params"])]
    if len(groups) != 1 or not all(any(q is p for q in groups[0]["params"]) for p in params):
        return None
    group = groups[0]
    key = second_moment_key(group)
    moments = [optimizer.state.get(p, {}).get(key) for p in params]
    if all(v is None for v in moments):
        if "betas" in group:  # Adam-like before its first step: nothing to read yet
            return None
        key = None
    elif any(
        v is None or v.stride() != p.stride() or v.dtype != p.dtype
        for v, p in zip(moments, params)
    ):
        return None

    weights = _flat_buffer(params)
    for p, view in zip(params, _views_of(weights, params)):
        p.data = view
    views = []
    moment_buffer = None
    if key is not None:
        moment_buffer = _flat_buffer(moments)
        views = _views_of(moment_buffer, moments)
        for p, view in zip(params, views):
            optimizer.state[p][key] = view
    return FlatWeights(params, weights, moment_buffer, optimizer, group, key, views)


def _sole_dense(t):
    """Strided, contiguous or channels_last, filling exactly the whole of its own storage."""
    if t.layout != torch.strided:
        return False
    dense = t.is_contiguous() or (
        t.dim() in (4, 5)
        and t.is_contiguous(
            memory_format=torch.channels_last if t.dim() == 4 else torch.channels_last_3d
        )
    )
    return (
        dense
        and t.storage_offset() == 0
        and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    )


def _flat_buffer(tensors):
    """A 1-D tensor holding every tensor's elements in storage order, one after another."""
    return torch.cat([t.as_strided((t.numel(),), (1,)) for t in tensors])


def _views_of(buffer, tensors):
    """Views of ``buffer`` with the shapes and strides of ``tensors``, in order."""
    views, offset = [], 0
    for t in tensors:
        views.append(buffer.as_strided(t.shape, t.stride(), offset))
        offset += t.numel()
    return views
