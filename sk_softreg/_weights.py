"""Sample weights: which rows a fit trains on, and the weighted data loss.

A weighted fit packs each row's weight with the row
(:func:`~sk_softreg._batching.pack_weights`), so the weights travel with
their rows through ``train_split`` and the iterators; :meth:`infer` gives the
module only the data, and the loss reads the weights back
(:func:`~sk_softreg._batching.unpack_weights`).
"""

import numpy as np
import scipy.sparse as sp
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import _check_sample_weight, check_consistent_length
from skorch.utils import is_dataset

from ._batching import pack_weights, unpack_weights
from .penalties import weighted_mean

__all__ = ["SampleWeightMixin"]


class SampleWeightMixin:
    """Weighted rows for ``fit``, and weighted means of the data loss and the KL term.

    The classifier extends :meth:`_sample_weights` with its ``class_weight``.
    """

    def _weighted_rows(self, X, y, sample_weight, classes=None, partial=False):
        """Return ``(X, y, weights)``: the rows to train on and their weights.

        ``weights`` is ``sample_weight`` (validated) times the class weights
        of the classifier's ``class_weight``. Rows of weight 0 are dropped, so
        they cannot influence training and the fit equals a fit without them.
        The remaining weights are divided by their maximum, which changes no
        weighted mean but keeps them representable in float32. Constant
        weights give the unweighted fit exactly, so they come back as None.
        """
        weights = self._sample_weights(X, y, sample_weight, classes=classes, partial=partial)
        if weights is None:
            return X, y, None
        keep = weights > 0
        if not keep.all():
            # a COO matrix cannot be indexed by rows (a sparse X is refused afterwards,
            # with the estimators' own error)
            X, y = (v.tocsr() if sp.issparse(v) else v for v in (X, y))
            X, y, weights = _safe_indexing(X, keep), _safe_indexing(y, keep), weights[keep]
        weights = weights / weights.max()
        if np.all(weights == 1.0):
            return X, y, None
        return X, y, weights

    def _sample_weights(self, X, y, sample_weight, classes=None, partial=False):
        """Validated ``sample_weight`` as float64, or None; subclasses add class weights."""
        if sample_weight is None:
            return None
        if is_dataset(X) or is_dataset(y):
            raise ValueError(
                f"{type(self).__name__} supports sample_weight only for in-memory X and y "
                "(arrays, lists, DataFrames), not for a torch Dataset."
            )
        check_consistent_length(X, y)
        return _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)

    @staticmethod
    def _with_weights(X, sample_weight):
        """``X`` as skorch gets it: packed with float32 weights when there are any."""
        if sample_weight is None:
            return X
        return pack_weights(X, sample_weight.astype(np.float32))

    def infer(self, x, **fit_params):
        """skorch's ``infer``, giving the module only the data of a weighted batch."""
        x, _ = unpack_weights(x)
        return super().infer(x, **fit_params)

    def _data_term(self, y_pred, y_true, X, weights, training):
        """The data loss: the criterion's, or its weighted mean over the batch."""
        if weights is None:
            return self._data_loss(y_pred, y_true, X=X, training=training)
        return weighted_mean(self._per_sample_data_loss(y_pred, y_true, X, training), weights)

    def _per_sample_data_loss(self, y_pred, y_true, X, training):
        """``_data_loss`` with the criterion's ``reduction`` set to ``"none"`` meanwhile."""
        criterion = self.criterion_
        reduction = getattr(criterion, "reduction", None)
        if not isinstance(reduction, str):
            raise TypeError(
                f"sample_weight and class_weight need per-sample losses, but the criterion "
                f"{type(criterion).__name__} has no 'reduction' attribute to set to 'none' "
                "(torch.nn losses have one)."
            )
        criterion.reduction = "none"
        try:
            return self._data_loss(y_pred, y_true, X=X, training=training)
        finally:
            criterion.reduction = reduction

    def _data_loss(self, y_pred, y_true, X=None, training=False):
        """The criterion's loss: skorch's ``get_loss``."""
        return super().get_loss(y_pred, y_true, X=X, training=training)
