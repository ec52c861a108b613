"""One-pass CPU loops over the flat buffer, compiled with numba where it is installed.

In eager torch the Adam-scaled proximal L1 step over the flat buffer
(:mod:`sk_softreg._flat`) is seven passes over memory (sqrt, add, reciprocal,
multiply, neg, clamp, subtract) and the history's two penalty values two more.
With numba installed (``pip install "sk-softreg[fast]"``) the step after the
square root is one compiled loop, and both values one more:

- :func:`soft_threshold_scaled_` runs, per coordinate, the operations of
  :func:`~sk_softreg.penalties.thresholds_from_moments` and
  :func:`~sk_softreg.penalties.prox_l1_` in the same order and the buffer's
  dtype, so the weights are bit-identical to torch's. The square root stays a
  torch kernel: torch's CPU ``sqrt`` is not always the correctly rounded one
  that numba computes, and the two would part by one unit in the last place.
- :func:`abs_and_square_sums` adds up ``|w|`` and ``w²`` in float64, in
  whatever order vectorizes, and returns Python floats; torch adds them in
  another order, so the history values agree up to rounding.

Without numba (or with ``NUMBA_DISABLE_JIT=1``) :func:`applies` is False and
the callers keep torch's kernels.
"""

import numpy as np
import torch

#: dtypes the loops are compiled for; other dtypes keep torch's kernels
_DTYPES = (torch.float32, torch.float64)

_kernels = None  # (soft threshold, sums) once compiled; False where numba is unavailable


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


@torch.no_grad()
def soft_threshold_scaled_(weights, root_moments, scale, shift):
    """Soft-threshold ``weights`` in place with thresholds ``scale / (root_moments + shift)``.

    .. math:: w \\leftarrow w - \\operatorname{clip}(w, -t, t), \\qquad
              t = \\mathrm{scale} \\cdot \\frac{1}{\\sqrt{v} + \\mathrm{shift}}

    the Adam threshold of :func:`~sk_softreg.penalties.prox_thresholds` with the
    coefficients of :func:`~sk_softreg.penalties.adam_threshold_coefficients`.

    Parameters
    ----------
    weights : torch.Tensor
        1-D; :func:`applies` must hold. Modified in place.
    root_moments : torch.Tensor
        ``sqrt(v)``, laid out like ``weights``.
    scale, shift : float
        Rounded to the buffer's dtype, as torch rounds a Python scalar.
    """
    soft_threshold, _ = _compiled()
    cast = _NUMPY_TYPE[weights.dtype]
    soft_threshold(
        weights.numpy(), root_moments.numpy(), cast(scale), cast(shift), cast(1.0)
    )


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
    _, sums = _compiled()
    return sums(weights.numpy())


_NUMPY_TYPE = {torch.float32: np.float32, torch.float64: np.float64}


def _soft_threshold_loop(w, root_v, scale, shift, one):
    # every operand has the buffer's dtype, so each operation rounds as torch's does
    for i in range(w.shape[0]):
        t = one / (root_v[i] + shift)
        t = t * scale
        x = w[i]
        w[i] = x - min(max(x, -t), t)


def _sums_loop(w):
    l1 = 0.0
    l2 = 0.0
    for i in range(w.shape[0]):
        x = np.float64(w[i])
        l1 += abs(x)
        l2 += x * x
    return l1, l2


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
    try:
        exact = numba.njit(nogil=True, cache=cache, error_model="numpy")
        reassociated = numba.njit(
            nogil=True, cache=cache, error_model="numpy", fastmath={"reassoc", "nsz"}
        )
        return exact(_soft_threshold_loop), reassociated(_sums_loop)
    except RuntimeError:  # numba found no writable cache directory: compile in memory
        if not cache:
            raise
        return _jit(numba, cache=False)
