"""The regressor's predictive std: the dropout-free output of its KL and the std scale.

The variance head is fitted to the network that ``predict`` uses: the KL term
sees the module's output with its dropout layers switched off
(:func:`dropout_off`), and the std it gives is then scaled by one
NLL-optimal factor per output (:func:`std_scale`); see the user guide.
"""

import inspect
from contextlib import contextmanager

import numpy as np
from torch import nn

from ._batching import unpack_weights

__all__ = [
    "DropoutFreeKLMixin", "dropout_layers", "dropout_off", "shares_dropout_free_pass", "std_scale",
]


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
    """Within: the dropout ``layers`` in eval mode (the rest of the module as it is);
    after: each layer in the mode it had."""
    modes = [layer.training for layer in layers]
    for layer in layers:
        layer.training = False
    try:
        yield
    finally:
        for layer, mode in zip(layers, modes):
            layer.training = mode


def shares_dropout_free_pass(module):
    """Whether ``module``'s ``forward`` takes ``dropout_free`` (and then returns the
    output and the dropout-free output of one pass, as
    :class:`~sk_softreg.modules.GaussianMLP` does)."""
    try:
        return "dropout_free" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # a forward without a signature
        return False


class DropoutFreeKLMixin:
    """The module's dropout-free output on a training batch, for the KL term.

    :meth:`_dropout_free_output` gives the output of the training batch with
    the dropout layers of :meth:`_kl_dropout_layers` switched off, which
    :meth:`infer` keeps: from the same pass as the training output where the
    module's ``forward`` takes ``dropout_free``, else from a second pass.
    """

    def _kl_dropout_layers(self):
        """The dropout layers that the KL term switches off (none at ``alpha == 0``)."""
        return dropout_layers(self.module_) if self.alpha else []

    def infer(self, x, **fit_params):
        """The module's output; in a training step whose KL needs the dropout-free
        output, that output too, kept for :meth:`_dropout_free_output`: from the
        same pass where the module's ``forward`` takes ``dropout_free``
        (:class:`~sk_softreg.modules.GaussianMLP`), else from a second pass with
        the same ``fit_params``."""
        state = getattr(self, "_fit_state", None)
        if state is None or not self.module_.training:
            return super().infer(x, **fit_params)
        if state.kl_pair is None:  # decided once per fit
            state.kl_pair = bool(self._kl_dropout_layers()) and shares_dropout_free_pass(
                self.module_
            )
        if state.kl_pair:
            y_pred, clean = super().infer(x, dropout_free=True, **fit_params)
        else:
            y_pred = super().infer(x, **fit_params)
            clean = self._dropout_free_pass(x, fit_params)
            if clean is None:
                return y_pred
        state.kl_output = (unpack_weights(x)[0], clean)
        return y_pred

    def _dropout_free_pass(self, x, fit_params):
        """The module's output on ``x`` with the KL's dropout layers off, or None
        where none of them is in training mode."""
        layers = [m for m in self._kl_dropout_layers() if m.training]
        if not layers:
            return None
        with dropout_off(layers):
            return super().infer(x, **fit_params)

    def _dropout_free_output(self, y_pred, X):
        """The module's output on the training batch ``X`` with its dropout layers off:
        the one :meth:`infer` kept, else a second forward pass (without fit params)."""
        state = getattr(self, "_fit_state", None)
        kept = None if state is None else state.kl_output
        if kept is not None:
            state.kl_output = None
            if kept[0] is X:
                return kept[1]
        clean = self._dropout_free_pass(X, {})
        return y_pred if clean is None else clean
