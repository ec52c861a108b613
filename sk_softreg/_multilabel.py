"""Multilabel targets of the classifier: an ``(n, L)`` indicator matrix of 0 and 1.

:class:`MultilabelMixin` gives :class:`~sk_softreg.SoftRegCNNClassifier` its
second kind of target. A fit on a 2-D ``Y`` with more than one column sets
``multilabel_``; from then on

- the network has one logit per label, and the default criterion
  (``CrossEntropyLoss``) is built as ``BCEWithLogitsLoss``, the binary
  cross-entropy of each label averaged over labels, with a per-label
  ``pos_weight`` under ``class_weight="balanced"``;
- the KL term of ``kl`` compares each label's Bernoulli with Bernoulli(1/2)
  (:func:`~sk_softreg.penalties.bernoulli_kl_from_half`,
  :func:`~sk_softreg.penalties.bernoulli_kl_to_half`), averaged over labels;
- ``predict_proba`` is the sigmoid of each logit, and ``predict`` thresholds
  it at 0.5;
- the validation split of ``early_stopping`` is not stratified (stratifying
  on label combinations fails as soon as one combination occurs once).

An ``(n, 1)`` column stays the binary target, as scikit-learn's
``type_of_target`` says.
"""

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils import check_array
from sklearn.utils.multiclass import type_of_target

from ._warnings import warn
from .penalties import bernoulli_kl_from_half, bernoulli_kl_to_half

__all__ = [
    "MultilabelMixin", "balanced_pos_weight", "check_indicator", "is_label_matrix", "subset_correct",
]

#: the per-label KL term of each ``kl`` option
BERNOULLI_KL_TERMS = {
    "label_smoothing": bernoulli_kl_from_half,
    "confidence_penalty": bernoulli_kl_to_half,
}
#: ``predict`` calls a label present where its probability exceeds this (as MLPClassifier)
THRESHOLD = 0.5


def subset_correct(proba, Y):
    """Which rows have every label right: each probability on ``Y``'s side of ``THRESHOLD``.

    ``proba`` and ``Y`` are ``(..., L)`` NumPy arrays or torch tensors (``Y`` of 0 and 1);
    returns the boolean ``(...)`` of subset accuracy's hits.
    """
    return ((proba > THRESHOLD) == (Y == 1)).all(-1)


def is_label_matrix(y):
    """True for a target of two dimensions with more than one column (sparse included)."""
    shape = getattr(y, "shape", None)  # arrays, DataFrames, sparse matrices
    if shape is None:
        try:
            shape = np.asarray(y).shape
        except ValueError:  # ragged sequences: column_or_1d reports them
            return False
    return len(shape) == 2 and shape[1] > 1


def check_indicator(Y, name):
    """``Y`` as a dense ``(n, L)`` array of 0 and 1 in its own dtype; a ValueError otherwise.

    A DataFrame of pandas' nullable dtypes (``"boolean"``, ``"Int64"``) becomes float64,
    as scikit-learn's ``check_array`` converts it.
    """
    if sp.issparse(Y):
        Y = Y.toarray()
    else:
        Y = check_array(Y, dtype=None, ensure_2d=False, ensure_all_finite=False, input_name="Y")
    values = np.unique(Y)
    if type_of_target(Y) != "multilabel-indicator" or not np.isin(values, (0, 1)).all():
        shown = ", ".join(repr(v) for v in values[:10].tolist()) + (", ..." if len(values) > 10 else "")
        raise ValueError(
            f"{name} takes a 2-D target as a multilabel indicator matrix (one column per "
            f"label, values 0 and 1), but Y holds the values [{shown}]. Encode sets of "
            "labels with sklearn.preprocessing.MultiLabelBinarizer."
        )
    return Y


def balanced_pos_weight(Y, sample_weight=None):
    """``class_weight="balanced"`` for multilabel targets: each label's ``pos_weight``.

    The weight of a label's positives is its (sample-weighted) count of
    negatives over its count of positives, so that both halves weigh the
    same in the data loss. Each count is floored at the mean sample weight
    (one average row), which caps the weight of a label without positives
    at about ``n`` instead of infinity.

    Parameters
    ----------
    Y : ndarray of shape (n, L)
        0/1 indicators.
    sample_weight : ndarray of shape (n,) or None

    Returns
    -------
    ndarray of shape (L,)
    """
    weights = np.ones(len(Y)) if sample_weight is None else np.asarray(sample_weight, float)
    positives = weights @ np.asarray(Y, dtype=float)
    negatives = weights.sum() - positives
    floor = weights.mean()
    return np.maximum(negatives, floor) / np.maximum(positives, floor)


def _warn_constant_labels(Y):
    constant = np.flatnonzero((Y == Y[:1]).all(axis=0)) if len(Y) else []
    if len(constant):
        warn(
            f"Label(s) {list(map(int, constant))} of Y are constant in the training data "
            "(all 0 or all 1): the network can only learn that constant for them."
        )


def _sigmoid_float64(logits):
    """Each label's probability, computed in float64 (float32 rounds 1 - 1e-8 to 1)."""
    return torch.sigmoid(logits.double())


class MultilabelMixin:
    """The classifier's multilabel targets: checks, criterion, KL term, probabilities, split.

    ``multilabel_`` is set by each fit; estimators pickled before it existed
    read as multiclass.
    """

    def _is_multilabel(self):
        return getattr(self, "multilabel_", False)

    def _check_target_kind(self, multilabel):
        """A ValueError when ``partial_fit`` (or a warm start) gets the other kind of target."""
        if multilabel == self._is_multilabel():
            return
        fitted, given = "a multilabel indicator matrix", "1-D class labels"
        if multilabel:
            fitted, given = given, fitted
        raise ValueError(
            f"{type(self).__name__} was fitted on {fitted}, but y is {given}. Call fit to "
            "train on another kind of target."
        )

    def _validate_label_matrix(self, Y, reset, classes=None, sample_weight=None):
        """The float32 ``(n, L)`` training targets; on ``reset``, the fitted label attributes."""
        name = type(self).__name__
        Y = check_indicator(Y, name)
        n_labels = Y.shape[1]
        for given in (self.classes, classes):
            if given is not None and len(given) and not np.array_equal(
                np.asarray(given), np.arange(n_labels)
            ):
                raise ValueError(
                    f"For a multilabel target, classes must be range(n_labels) = "
                    f"range({n_labels}), one per column of Y; got {np.asarray(given).tolist()}."
                )
        if reset:
            self.classes_inferred_ = np.arange(n_labels)
            self.multilabel_ = True
            self._y_dtype = Y.dtype.str
            if self.class_weight == "balanced":
                self.pos_weight_ = balanced_pos_weight(Y, sample_weight)
            else:
                self.__dict__.pop("pos_weight_", None)
        elif n_labels != len(self.classes_):
            raise ValueError(
                f"Y has {n_labels} labels (columns), but {name} was fitted on "
                f"{len(self.classes_)}."
            )
        _warn_constant_labels(Y)
        return Y.astype(np.float32)

    def _check_label_matrix_class_weight(self, partial):
        """``class_weight`` for multilabel targets: only ``"balanced"``, in ``fit``; it
        becomes the criterion's ``pos_weight`` (see :meth:`initialize_criterion`)."""
        own = "criterion__pos_weight=torch.tensor([...]) with one weight per label"
        if isinstance(self.class_weight, dict):
            raise ValueError(
                "class_weight as a dict is not supported for multilabel targets (its keys "
                f"name classes of a 1-D y). Use class_weight='balanced', or {own}."
            )
        if partial:
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit. For multilabel "
                f"targets, compute the weights on a large enough sample and pass {own}."
            )

    def initialize_criterion(self):
        """skorch's; for multilabel targets the default ``CrossEntropyLoss`` is built as
        ``BCEWithLogitsLoss``, with ``pos_weight_`` under ``class_weight="balanced"``."""
        if not self._is_multilabel():
            return super().initialize_criterion()
        criterion = self.criterion
        if criterion is torch.nn.CrossEntropyLoss:
            criterion = torch.nn.BCEWithLogitsLoss
        kwargs = self.get_params_for("criterion")
        pos_weight = getattr(self, "pos_weight_", None)
        if pos_weight is not None:
            if not (isinstance(criterion, type) and issubclass(criterion, torch.nn.BCEWithLogitsLoss)):
                raise ValueError(
                    "class_weight='balanced' with multilabel targets sets the pos_weight of "
                    f"torch.nn.BCEWithLogitsLoss; the criterion {criterion!r} has none."
                )
            if "pos_weight" in kwargs:
                raise ValueError(
                    "class_weight='balanced' sets the criterion's pos_weight for multilabel "
                    "targets; pass class_weight or criterion__pos_weight, not both."
                )
            kwargs["pos_weight"] = torch.as_tensor(pos_weight, dtype=torch.float32)
        self.criterion_ = self.initialized_instance(criterion, kwargs)
        return self

    def _multilabel_kl(self, logits):
        """Per sample: the mean over labels of each label's Bernoulli KL (``kl``)."""
        return BERNOULLI_KL_TERMS[self.kl](logits).mean(dim=-1)

    def _get_predict_nonlinearity(self):
        """skorch's; for multilabel targets ``"auto"`` is the per-label sigmoid (in float64),
        not skorch's two-column ``_sigmoid_then_2d`` for ``BCEWithLogitsLoss``."""
        nonlinearity = self.predict_nonlinearity
        if self._is_multilabel() and isinstance(nonlinearity, str) and nonlinearity == "auto":
            self.check_is_fitted()
            return _sigmoid_float64
        return super()._get_predict_nonlinearity()

    def _threshold(self, proba):
        """``predict``'s indicators: ``proba > 0.5``, in the dtype of the ``Y`` of fit."""
        return (proba > THRESHOLD).astype(np.dtype(self._y_dtype))

    def _stratified_split(self, y):
        """No stratification for multilabel targets (nor for label combinations)."""
        return not self._is_multilabel() and super()._stratified_split(y)
