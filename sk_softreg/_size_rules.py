"""The regressor's size rules: defaults that follow the number of training rows.

``"auto"`` values of :class:`~sk_softreg.SoftRegRegressor` (dropout of the
default module, batch size, learning rate, and when ``early_stopping="auto"``
holds out rows), chosen on five public tables (see the user guide).
"""

import numpy as np

__all__ = ["auto_batch_size", "auto_dropout", "auto_lr", "is_auto", "AUTO_STOP_MIN_VALID"]

# early_stopping="auto" holds out a validation set when it gets this many rows
AUTO_STOP_MIN_VALID = 30


def auto_dropout(n_rows):
    """Dropout of the default ``GaussianMLP`` for ``n_rows`` training rows:
    ``clip(0.5 - 0.4 * log10(n_rows / 1000), 0.1, 0.5)`` (0.5 up to 1,000 rows,
    0.1 from 10,000)."""
    if n_rows <= 1000:
        return 0.5
    return float(np.clip(0.5 - 0.4 * np.log10(n_rows / 1000), 0.1, 0.5))


def auto_batch_size(n_rows):
    """``batch_size="auto"``: 128 below 2,000 training rows, 256 from 2,000."""
    return 128 if n_rows < 2000 else 256


def auto_lr(batch_size):
    """``lr="auto"``: ``1e-3 * min(batch_size / 64, 4) ** 0.8`` (1e-3 at batch 64,
    1.74e-3 at 128, 3.03e-3 from 256)."""
    return 1e-3 * min(batch_size / 64, 4.0) ** 0.8


def is_auto(value):
    """True for the string ``"auto"`` (and not for an array or other object)."""
    return isinstance(value, str) and value == "auto"
