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
  ``sqrt`` kernel is not always (one unit in the last place off for a share
  of inputs), so a threshold can differ from torch's kernels' by that unit,
  and the weights are bit-identical to torch's kernels fed a correctly
  rounded square root. Taking the root in the loop spares a pass over the
  moments and a buffer allocated per step.
- :func:`abs_and_square_sums` adds up ``|w|`` and ``w²`` in float64, in
  whatever order vectorizes, and returns Python floats; torch adds them in
  another order, so the history values agree up to rounding.

Without numba (or with ``NUMBA_DISABLE_JIT=1``) :func:`applies` is False and
the callers keep torch's kernels.
"""

from collections import namedtuple

import numpy as np
import torch

__all__ = ["abs_and_square_sums", "applies", "soft_threshold_scaled_"]

#: dtypes the loops are compiled for; other dtypes keep torch's kernels
_DTYPES = (torch.float32, torch.float64)

_Kernels = namedtuple("_Kernels", "threshold sums")
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
    """
    kernels, w, cast = _compiled(), weights.numpy(), _NUMPY_TYPE[weights.dtype]
    kernels.threshold(w, moments.numpy(), cast(scale), cast(shift), cast(1.0))


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
        return _Kernels(exact(_threshold_loop), exact(_sums_loop))
    except RuntimeError:  # numba found no writable cache directory: compile in memory
        if not cache:
            raise
        return _jit(numba, cache=False)
