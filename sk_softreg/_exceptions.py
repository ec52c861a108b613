"""Exceptions raised by sk_softreg."""

__all__ = ["ModelFileError", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite training loss, validation loss or weight.

    Raised by ``fit`` / ``partial_fit``. The message names the epoch (and, for
    a loss, the training or validation batch). The estimator is left unfitted, so it cannot silently predict NaN.
    """


class ModelFileError(ValueError):
    """A file given to :func:`sk_softreg.load` is not a valid sk_softreg model file.

    Raised for a file in another format (a pickle, for instance), a truncated or
    corrupted file, or one that names a class outside the allowed modules.
    """
