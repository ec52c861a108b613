"""The regressor's predictive std: the dropout-free pass of its KL and the std scale.

The variance head is fitted to the network that ``predict`` uses: the KL term
sees the module's output with its dropout layers switched off
(:func:`dropout_off`), and the std it gives is then scaled by one
NLL-optimal factor per output (:func:`std_scale`); see the user guide.
"""

import inspect
from contextlib import contextmanager

import numpy as np
from torch import nn

__all__ = ["dropout_layers", "dropout_off", "shares_dropout_free_pass", "std_scale"]


def std_scale(residual, std, sample_weight=None):
    """The scale ``s`` per output that makes ``s * std`` the Gaussian-NLL-optimal std
    on these rows: ``s**2 = sum_i w_i (r_i / std_i)**2 / sum_i w_i``.

    Parameters
    ----------
    residual, std : ndarray of shape (n_samples, n_outputs)
    sample_weight : ndarray of shape (n_samples,) or None

    Returns
    -------
    ndarray of shape (n_outputs,)
    """
    z2 = (residual.astype(np.float64) / std) ** 2
    return np.sqrt(np.average(z2, axis=0, weights=sample_weight))


#: torch's dropout layers (the public classes)
DROPOUT_LAYERS = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)


def dropout_layers(module):
    """The dropout layers of ``module`` (a list)."""
    return [m for m in module.modules() if isinstance(m, DROPOUT_LAYERS)]


@contextmanager
def dropout_off(layers):
    """Within: the dropout ``layers`` in eval mode (the rest of the module as it is)."""
    for layer in layers:
        layer.training = False
    try:
        yield
    finally:
        for layer in layers:
            layer.training = True


def shares_dropout_free_pass(module):
    """Whether ``module``'s ``forward`` takes ``dropout_free`` (and then returns the
    output and the dropout-free output of one pass, as
    :class:`~sk_softreg.modules.GaussianMLP` does)."""
    try:
        return "dropout_free" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # a forward without a signature
        return False
