"""One-pass CPU loops over the flat buffer, compiled with numba where it is installed.

In eager torch the Adam-scaled proximal L1 step over the flat buffer
(:mod:`sk_softreg._flat`) is seven passes over memory (sqrt, add, reciprocal,
multiply, neg, clamp, subtract) and the history's two penalty values two more.
With numba installed (``pip install "sk-softreg[fast]"``) the whole step is
one compiled loop, and both values one more:

- :func:`soft_threshold_scaled_` runs, per coordinate, the operations of
  :func:`~sk_softreg.penalties.thresholds_from_moments` and
  :func:`~sk_softreg.penalties.prox_l1_` in the same order and the buffer's
  dtype. Its square root is the correctly rounded one (IEEE 754); torch's CPU
  ``sqrt`` kernel is not always: on the project's benchmark VM (torch 2.14.1)
  it is one unit in the last place off for about 17% of float32 inputs and 1%
  of float64 ones. So a threshold can differ from torch's kernels' by that unit,
  and the weights are bit-identical to torch's kernels fed a correctly rounded
  square root. Taking the root in the loop spares a pass over the moments and
  a buffer allocated per step (about 100 µs per batch of the digits CNN).
- :func:`abs_and_square_sums` adds up ``|w|`` and ``w²`` in float64, in
  whatever order vectorizes, and returns Python floats; torch adds them in
  another order, so the history values agree up to rounding. The
  soft-threshold step returns the same two sums of the weights it leaves,
  added by a second loop over the buffer it just wrote (read from cache):
  they are the next batch's values when nothing changes the weights in
  between (:mod:`sk_softreg._flat`).

The classifier's loss under ``alpha > 0`` is the other per-batch cost of the
penalties: cross-entropy plus ``α·KL(u ‖ p)`` is, in eager torch, a dozen small
kernels and autograd nodes for an ``(n, K)`` block of logits.
:func:`cross_entropy_with_kl` computes its value and its gradient,
``((1 + α)·p − α/K − onehot(y)) / n``, in one compiled loop: one autograd node
whose backward hands the gradient on (scaled where the incoming one is not 1).

Without numba (or with ``NUMBA_DISABLE_JIT=1``) :func:`applies` is False and
the callers keep torch's kernels.
"""

import math
from collections import namedtuple

import numpy as np
import torch

#: dtypes the loops are compiled for; other dtypes keep torch's kernels
_DTYPES = (torch.float32, torch.float64)

_Kernels = namedtuple("_Kernels", "threshold sums cross_entropy_kl")
_kernels = None  # a _Kernels once compiled; False where numba is unavailable


def applies(buffer):
    """True where the compiled loops can work on ``buffer``: numba is importable and
    JIT-enabled, and ``buffer`` is a contiguous 1-D float32 or float64 CPU tensor."""
    return (
        buffer.device.type == "cpu"
        and buffer.dtype in _DTYPES
        and buffer.dim() == 1
        and buffer.is_contiguous()
        and not buffer.requires_grad
        and bool(_compiled())
    )


def soft_threshold_scaled_(weights, moments, scale, shift):
    """Soft-threshold ``weights`` in place with thresholds ``scale / (sqrt(moments) + shift)``.

    .. math:: w \\leftarrow w - \\operatorname{clip}(w, -t, t), \\qquad
              t = \\mathrm{scale} \\cdot \\frac{1}{\\sqrt{v} + \\mathrm{shift}}

    the Adam threshold of :func:`~sk_softreg.penalties.prox_thresholds` with the
    coefficients of :func:`~sk_softreg.penalties.adam_threshold_coefficients`.

    Parameters
    ----------
    weights : torch.Tensor
        1-D; :func:`applies` must hold. Modified in place.
    moments : torch.Tensor
        The second moments ``v``, laid out like ``weights``; the square root
        is correctly rounded.
    scale, shift : float
        Rounded to the buffer's dtype, as torch rounds a Python scalar.

    Returns
    -------
    l1, l2 : float
        ``Σ|w|`` and ``Σw²`` of the thresholded weights, what
        :func:`abs_and_square_sums` returns for them.
    """
    # two loops, not one: float64 sums inside the threshold loop set its vector
    # width, and half as many lanes for the root and the division cost more than a
    # second pass over the buffer just written (digits CNN, in fits on the 2-core
    # Intel VM: 91-96 us per batch in one loop, 64-67 us in two, 52-53 us for the
    # threshold alone)
    kernels, w, cast = _compiled(), weights.numpy(), _NUMPY_TYPE[weights.dtype]
    kernels.threshold(w, moments.numpy(), cast(scale), cast(shift), cast(1.0))
    return kernels.sums(w)


def abs_and_square_sums(weights):
    """``(Σ|w|, Σw²)`` over ``weights``, summed in float64, as Python floats.

    Floats, not tensors: the caller's arithmetic on them then costs no torch
    operation per batch.

    Parameters
    ----------
    weights : torch.Tensor
        1-D; :func:`applies` must hold.

    Returns
    -------
    l1, l2 : float
    """
    return _compiled().sums(weights.numpy())


def cross_entropy_with_kl(logits, target, alpha, ignore_index=-100, offset=0.0):
    """Mean cross-entropy plus ``alpha`` times the mean KL from uniform, in one node.

    .. math:: L = \\frac1n \\sum_i \\Big[-\\log p_{i y_i}
              + \\alpha\\,\\mathrm{KL}(u \\,\\|\\, p_i)\\Big] + c, \\qquad
              \\frac{\\partial L}{\\partial z_{ik}}
              = \\frac1n \\Big[(1 + \\alpha)\\,p_{ik} - \\frac{\\alpha}{K}
              - [k = y_i]\\Big]

    with ``p_i = softmax(z_i)``,
    :func:`~sk_softreg.penalties.kl_from_uniform` as the KL and ``c`` a constant
    (``offset``: terms without gradient, such as penalty values, added to the
    node's value instead of through a node of their own): the value of
    ``F.cross_entropy(z, y) + alpha * kl_from_uniform(z).mean() + offset`` and its
    gradient, computed in float64 per row and rounded to the logits' dtype
    (torch's kernels round each step to that dtype, so the two agree up to
    rounding, not bit for bit).

    Parameters
    ----------
    logits : torch.Tensor of shape (n, K)
        Contiguous float32 or float64 CPU tensor.
    target : torch.Tensor of shape (n,)
        int64 class indices on the CPU.
    alpha : float
    ignore_index : int, default=-100
        The criterion's ``ignore_index``: a batch with such a target returns
        None (torch's kernels then leave those rows out of the mean).
    offset : float, default=0.0
        ``c``, added to the value in float64; it has no gradient.

    Returns
    -------
    (loss, kl) or None
        ``loss``, a 0-d tensor of the logits' dtype, differentiable once with
        respect to ``logits`` (a backward pass with ``create_graph=True``
        raises); ``kl``, the mean KL as a Python float. None,
        with nothing computed, where numba is unavailable, a tensor is not as
        described above, or a target is outside ``[0, K)`` or equal to
        ``ignore_index``: the caller then takes torch's kernels (and their
        errors).
    """
    kernels = _compiled()
    if not (
        kernels
        and logits.is_cpu
        and logits.dtype in _DTYPES
        and logits.dim() == 2
        and logits.is_contiguous()
        and target.is_cpu
        and target.dtype == torch.int64
        and target.shape == logits.shape[:1]
    ):
        return None
    grad = torch.empty_like(logits)
    ce, kl, valid = kernels.cross_entropy_kl(
        logits.detach().numpy(), target.numpy(), alpha, ignore_index, grad.numpy()
    )
    if not valid:
        return None
    return _CrossEntropyWithKL.apply(logits, grad, ce + alpha * kl + offset), kl


class _CrossEntropyWithKL(torch.autograd.Function):
    """The node of :func:`cross_entropy_with_kl`: value and gradient come computed."""

    @staticmethod
    def forward(ctx, logits, grad, value):
        ctx.save_for_backward(grad)
        return torch.scalar_tensor(value, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():  # create_graph=True: the gradient has no graph
            raise RuntimeError(
                "cross_entropy_with_kl is differentiable once: its gradient was computed "
                "without a graph, so it cannot be differentiated again"
            )
        (grad,) = ctx.saved_tensors
        scale = float(grad_output)
        return (grad if scale == 1.0 else grad * scale), None, None


_NUMPY_TYPE = {torch.float32: np.float32, torch.float64: np.float64}


def _threshold_loop(w, v, scale, shift, one):
    # every operand has the buffer's dtype, so each operation rounds as torch's does
    # (np.sqrt: the correctly rounded root, in that dtype); compiled without
    # reassociation, which would change the rounding (it gave other weights than torch's)
    for i in range(w.shape[0]):
        t = one / (np.sqrt(v[i]) + shift)
        t = t * scale
        x = w[i]
        w[i] = x - min(max(x, -t), t)


def _sums_loop(w):
    l1 = 0.0
    l2 = 0.0
    for i in range(w.shape[0]):
        l1, l2 = _add_abs_and_square(l1, l2, w[i])
    return l1, l2


def _add_abs_and_square_py(l1, l2, x):
    x = np.float64(x)
    return l1 + abs(x), l2 + x * x


#: _add_abs_and_square_py compiled with reassociation (by _jit, before the loops
#: that call it), so that the sums over a loop vectorize
_add_abs_and_square = None


def _cross_entropy_kl_loop(z, y, alpha, ignore_index, grad):
    # per row, in float64: log-sum-exp, -log p_y, the sum of log p over the
    # classes, and the gradient ((1 + alpha) p - alpha / K - onehot) / n into
    # grad; returns the batch means (ce, kl) and whether every target was valid
    n, k = z.shape
    exps = np.empty(k)  # one row's exp(z - max)
    ce = 0.0
    sum_log_p = 0.0
    for i in range(n):
        c = y[i]
        if c < 0 or c >= k or c == ignore_index:
            return 0.0, 0.0, False
        top = np.float64(z[i, 0])
        for j in range(1, k):
            top = max(top, np.float64(z[i, j]))
        total = 0.0
        for j in range(k):
            exps[j] = math.exp(np.float64(z[i, j]) - top)
            total += exps[j]
        log_total = math.log(total)
        row = 0.0
        for j in range(k):
            g = (1.0 + alpha) * (exps[j] / total) - alpha / k
            if j == c:
                g -= 1.0
            grad[i, j] = g / n
            row += np.float64(z[i, j]) - top - log_total
        ce -= np.float64(z[i, c]) - top - log_total
        sum_log_p += row
    return ce / n, -sum_log_p / (n * k) - math.log(k), True


def _compiled():
    """The numba-compiled loops, compiled (or loaded from numba's cache) on first use."""
    global _kernels
    if _kernels is None:
        try:
            import numba
        except ImportError:
            _kernels = False
        else:
            if numba.config.DISABLE_JIT:  # the loops would run as Python: far slower than torch
                _kernels = False
            else:
                _kernels = _jit(numba, cache=True)
    return _kernels


def _jit(numba, cache):
    # error_model="numpy": no zero-division branch, so the loops vectorize;
    # fastmath only where the order of a sum may change
    global _add_abs_and_square
    try:
        exact = numba.njit(nogil=True, cache=cache, error_model="numpy")
        reassociated = numba.njit(
            nogil=True, cache=cache, error_model="numpy", fastmath={"reassoc", "nsz"}
        )
        _add_abs_and_square = reassociated(_add_abs_and_square_py)
        return _Kernels(
            exact(_threshold_loop), exact(_sums_loop), exact(_cross_entropy_kl_loop)
        )
    except RuntimeError:  # numba found no writable cache directory: compile in memory
        if not cache:
            raise
        return _jit(numba, cache=False)
