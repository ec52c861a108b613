"""The classifier's class labels: ``classes_``, their encoding as class indices,
and the weights ``class_weight`` gives each row.

:class:`ClassLabelsMixin` reads the classes at the first fit (before rows of
weight 0 are dropped, so that such a class keeps its place), encodes labels as
indices into ``classes_`` in any order (skorch's ``classes`` parameter keeps
the user's), decodes the training targets for the scorers, and checks what
scikit-learn checks of them (``partial_fit``'s ``classes``, two rows of each
class for early stopping's stratified split).
"""

import math
import numbers

import numpy as np
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_consistent_length, column_or_1d

from ._multilabel import is_label_matrix
from ._validation import is_lazy, label_indices

__all__ = ["ClassLabelsMixin"]


class ClassLabelsMixin:
    """Class labels for :class:`~sk_softreg.SoftRegCNNClassifier` (multilabel targets:
    :class:`~sk_softreg._multilabel.MultilabelMixin`)."""

    def _sample_weights(self, X, y, sample_weight, classes=None, partial=False):
        """``sample_weight`` times the weight of each row's class (``class_weight``)."""
        weights = super()._sample_weights(X, y, sample_weight, classes=classes, partial=partial)
        if self.class_weight is None:
            return weights
        if is_lazy(X) or is_lazy(y):
            raise ValueError(
                f"{type(self).__name__} supports class_weight only for in-memory X and y, not "
                "for a torch Dataset; pass criterion__weight=torch.tensor([...]) (one weight "
                "per class, in the order of classes_) instead."
            )
        if is_label_matrix(y):
            # per-label weights cannot fold into per-row ones: "balanced" becomes the
            # criterion's pos_weight (MultilabelMixin.initialize_criterion)
            self._check_label_matrix_class_weight(partial)
            return weights
        labels = column_or_1d(y)
        check_consistent_length(X, labels)
        if weights is None:
            weights = np.ones(len(labels))
        if isinstance(self.class_weight, str):
            if partial:
                raise ValueError(
                    "class_weight 'balanced' is not supported for partial_fit. In order to use "
                    "'balanced' weights, use compute_class_weight('balanced', classes=classes, "
                    "y=y) on a large enough sample of the targets and pass the resulting "
                    "weights as a dict to the class_weight parameter."
                )
            # n_samples / (n_classes * count), counted with the weights over the rows
            # that keep a positive weight; the other rows keep their weight 0
            positive = weights > 0
            present = unique_labels(labels[positive])
            per_class = compute_class_weight(
                "balanced", classes=present, y=labels[positive], sample_weight=weights[positive]
            )
            return weights * per_class[np.searchsorted(present, labels).clip(0, len(present) - 1)]
        return weights * self._class_weight_per_row(labels, classes)

    def _class_weight_per_row(self, labels, classes):
        """The weight ``class_weight`` (a dict) gives each row's label; 1 for unlisted labels."""
        known = unique_labels(labels)
        for extra in (self.classes, classes):
            if extra is not None and len(extra):
                known = np.union1d(known, np.asarray(extra))
        per_row = np.ones(len(labels))
        for label, weight in self.class_weight.items():
            if not np.any(known == label):
                raise ValueError(
                    f"class_weight names the label {label!r}, which is not among the classes of "
                    f"y: {known.tolist()}."
                )
            if (
                not isinstance(weight, numbers.Real)
                or isinstance(weight, bool)
                or not math.isfinite(weight)
                or weight < 0
            ):
                raise ValueError(
                    f"class_weight must map labels to non-negative finite numbers; got "
                    f"{weight!r} for label {label!r}."
                )
            per_row[labels == label] = weight
        return per_row

    def _stratified_split(self, y):
        """Whether early stopping's split stratifies by y (see the base class); where it
        does, each class needs two rows, one for each side of the split.

        Checked here so that the error names the user's labels: the split sees
        class indices.
        """
        stratified = super()._stratified_split(y)
        if stratified and isinstance(y, np.ndarray) and y.ndim == 1:
            counts = np.bincount(y.astype(np.intp), minlength=len(self.classes_))
            single = np.asarray(self.classes_)[counts == 1]
            if len(single):
                raise ValueError(
                    f"early_stopping holds out a stratified validation_fraction="
                    f"{self.validation_fraction} of the training rows, which needs at least "
                    f"2 rows of each class; these classes have 1: {single.tolist()}. Pass "
                    "early_stopping=False, or a train_split of your own."
                )
        return stratified

    def _check_same_classes(self, classes):
        """A later ``partial_fit``'s ``classes`` must be the first call's (scikit-learn's check)."""
        if not np.array_equal(np.sort(self.classes_), unique_labels(np.asarray(classes))):
            raise ValueError(
                f"`classes={classes!r}` is not the same as on last call to partial_fit, "
                f"was: {self.classes_!r}"
            )

    def _target_labels(self, y, sample_weight):
        """The labels of a 1-D in-memory y, read before rows of weight 0 are dropped.

        None where no row can be dropped (no ``sample_weight`` and no
        ``class_weight``), for a label matrix or a Dataset, and for a y that
        ``_validate_fit_data`` will reject (it raises, in its own wording).
        """
        if sample_weight is None and self.class_weight is None:
            return None
        if y is None or is_lazy(y) or is_label_matrix(y):
            return None
        try:
            return unique_labels(column_or_1d(y))
        except (TypeError, ValueError):
            return None

    def _set_classes(self, y, classes):
        if self.classes is not None and len(self.classes):
            labels = np.asarray(self.classes)
        elif classes is not None:
            labels = unique_labels(np.asarray(classes))
        else:
            labels = unique_labels(y)
        if len(labels) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, "
                f"but the data contains only one class: {np.asarray(labels[0]).item()!r}."
            )
        self.classes_inferred_ = labels
        self.multilabel_ = False
        self.__dict__.pop("pos_weight_", None)

    @property
    def classes_(self):
        """The class labels: ``classes`` if given, else those inferred at fit. An empty
        ``classes`` infers them too (in skorch it means no ``classes_``, which this
        classifier cannot do without)."""
        if self.classes is not None and not len(self.classes):
            return self.classes_inferred_
        return super().classes_

    def _encode(self, y):
        return label_indices(self.classes_, y)

    def _encode_targets(self, y):
        if self._is_multilabel():
            return self._validate_label_matrix(y, reset=False)
        return self._encode(column_or_1d(np.asarray(y)))

    def _user_targets(self, y):
        if self._is_multilabel():  # the indicators, in the dtype of fit's Y
            return np.asarray(y).astype(np.dtype(self._y_dtype))
        return self.classes_[np.asarray(y, dtype=np.intp)]
