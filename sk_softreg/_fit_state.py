"""The state of one fit, in one object: built when training starts, dropped when it ends.

:class:`FitState` is everything the estimators keep between batches of a
fit: the penalty engine, the input layer's weight for ``lambda_features``,
the tensors the fast layer prepared, and the sums of the epoch's penalty
terms for history. Nothing of it is pickled; only the validation set is read
after the fit, for the fitted attributes computed on it.
"""

import torch

__all__ = ["HISTORY_TERMS", "EpochTerms", "FitState"]

#: the penalty terms that each epoch's history row gets, in the order of :class:`EpochTerms`
HISTORY_TERMS = ("train_l1", "train_l2", "train_kl", "train_features")


class FitState:
    """What a running fit keeps between batches.

    Attributes
    ----------
    engine : PenaltyEngine or None
        The weight penalties (:mod:`sk_softreg._engine`), built at the first
        use for the module it was built for (``engine_module``).
    feature_weight : tuple or None
        ``(module, weight)``: the input layer's weight for ``lambda_features``.
    batches : dict
        The fast layer's prepared tensors, by dataset.
    terms : EpochTerms or None
        The epoch's penalty-term sums.
    evaluations : list or None
        Inside a training step: ``(loss, terms, n)`` of each loss evaluation.
    hooks : dict or None
        The fast layer's per-batch callback methods, by hook name.
    dataset_valid : Dataset or None
        The fit's validation set (``early_stopping`` or a ``train_split``);
        kept after :meth:`close` for the fitted attributes computed on it.
    kl_output : tuple or None
        Inside a training step: ``(X, output)``, the module's dropout-free
        output on the batch ``X``, from the training pass or a second one
        (the regressor's KL term reads it).
    kl_pair : bool or None
        Whether the training steps take that output from the training pass
        (decided at the first step).
    reselect : bool
        Whether the engine's weights are to be selected again at their next use
        (set at each epoch's start, after which callbacks may have frozen or
        unfrozen weights).
    """

    __slots__ = (
        "engine", "engine_module", "feature_weight", "batches", "terms", "evaluations", "hooks",
        "dataset_valid", "kl_output", "kl_pair", "reselect",
    )

    def __init__(self):
        self.engine = None
        self.engine_module = None
        self.feature_weight = None
        self.batches = {}
        self.terms = None
        self.evaluations = None
        self.hooks = None
        self.dataset_valid = None
        self.kl_output = None
        self.kl_pair = None
        self.reselect = False

    def close(self):
        """End of the fit: the engine releases what it holds."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None


class EpochTerms:
    """The epoch's sums of the history terms (:data:`HISTORY_TERMS`), row-weighted.

    A value is a Python float or a 0-d tensor. Tensors are added in place
    without a graph, so nothing is read off the device per batch;
    :meth:`means` reads each sum once.
    """

    __slots__ = ("sums", "rows")

    def __init__(self):
        self.sums = [0.0] * len(HISTORY_TERMS)
        self.rows = 0

    def add(self, values, rows):
        """Add ``rows`` times each value that is not None, and ``rows`` to :attr:`rows`."""
        self.rows += rows
        with torch.no_grad():
            for i, value in enumerate(values):
                if value is not None:
                    self.sums[i] = self.sums[i] + value * rows

    def means(self):
        """Each term's sum over the epoch divided by :attr:`rows`, as floats."""
        return [float(total) / self.rows for total in self.sums]
