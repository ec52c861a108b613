"""Image inputs of the classifier: ``(n, C, H, W)``, ``(n, H, W)`` or flat ``(n, H*W)`` arrays.

:class:`ImageInputMixin` validates ``X`` as images and fixes ``input_shape_``
at the first fit: a flat array is reshaped by ``image_shape`` when given, or
into the largest square (else one row of pixels). A torch ``Dataset`` of
``(image, label)`` pairs is checked from its first sample, and its labels are
served as class indices (:class:`~sk_softreg._validation.TargetsEncoded`).
"""

import math
from functools import partial

import numpy as np
import torch
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    column_or_1d,
    validate_data,
)

from ._multilabel import is_label_matrix
from ._validation import (
    FLOAT_DTYPES,
    TargetsEncoded,
    as_float32,
    first_sample_shape,
    is_lazy,
    label_indices,
)
from ._warnings import warn

__all__ = ["ImageInputMixin"]


class ImageInputMixin:
    """``_check_X``: validated float32 images of shape ``(n, C, H, W)``; ``input_shape_``;
    ``_validate_fit_dataset`` for a torch ``Dataset`` of images."""

    def _check_X(self, X, reset):
        """Validate X and return float32 images of shape (n, C, H, W)."""
        if _ndim(X) > 2:
            X = check_array(X, allow_nd=True, dtype=FLOAT_DTYPES, estimator=self)
            if X.ndim > 4:
                raise ValueError(
                    f"Found array with dim {X.ndim}. {type(self).__name__} expected <= 4."
                )
            if 0 in X.shape[1:]:
                raise ValueError(
                    f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 "
                    "is required."
                )
            images = X if X.ndim == 4 else X[:, None]
            shape = tuple(int(s) for s in images.shape[1:])
            if reset:
                _warn_if_channels_last(shape)
                self._check_image_shape_matches(shape)
            else:
                self._check_same_image_shape(shape)
            validate_data(self, images.reshape(len(images), -1), reset=reset, skip_check_array=True)
        else:
            X = validate_data(self, X, reset=reset, dtype=FLOAT_DTYPES)
            shape = self._image_shape_for(X.shape[1]) if reset else self.input_shape_
            images = X.reshape(len(X), *shape)
        if reset:
            self.input_shape_ = shape
        return as_float32(images)

    def _parsed_image_shape(self):
        shape = self.image_shape
        if shape is None:
            return None
        if len(shape) not in (2, 3) or not all(
            isinstance(s, (int, np.integer)) and s >= 1 for s in shape
        ):
            raise InvalidParameterError(
                f"The 'image_shape' parameter of {type(self).__name__} must be None or a tuple "
                f"(C, H, W) or (H, W) of positive ints. Got {shape!r} instead."
            )
        shape = tuple(int(s) for s in shape)
        return shape if len(shape) == 3 else (1, *shape)

    def _image_shape_for(self, n_features):
        shape = self._parsed_image_shape()
        if shape is not None:
            if math.prod(shape) != n_features:
                raise ValueError(
                    f"image_shape={self.image_shape!r} holds {math.prod(shape)} values per "
                    f"sample, but X has {n_features} features."
                )
            return shape
        side = math.isqrt(n_features)
        return (1, side, side) if side * side == n_features else (1, 1, n_features)

    def _check_image_shape_matches(self, shape):
        expected = self._parsed_image_shape()
        if expected is not None and expected != tuple(shape):
            raise ValueError(
                f"image_shape={self.image_shape!r} does not match the shape of the images in "
                f"X, {tuple(shape)}."
            )

    def _check_same_image_shape(self, shape):
        if shape != self.input_shape_:
            raise ValueError(
                f"X has images of shape {shape}, but {type(self).__name__} was fitted on "
                f"images of shape {self.input_shape_}."
            )

    def _validate_fit_dataset(self, X, y, reset, classes):
        """Lazy data: a torch ``Dataset`` of ``(x, y)`` pairs, or a skorch ``SliceDataset``.

        Samples are not validated or copied; each ``x`` must be a float32
        ``(C, H, W)`` tensor. ``input_shape_`` comes from the first sample.
        A ``Dataset`` with a ``classes`` list of names whose targets index
        into it (:class:`~sk_softreg.datasets.ImageFolderDataset`, torchvision's
        ``ImageFolder``) gives those names as ``classes_``. Otherwise, without
        the ``classes`` parameter (or ``partial_fit``'s ``classes``) the labels
        are read once from the whole data set, which loads every sample of a
        ``Dataset`` of pairs.
        """
        pairs = y is None
        names = _class_names(X) if pairs else None
        first = X[0] if pairs and isinstance(X, torch.utils.data.Dataset) and len(X) else None
        shape = first_sample_shape(X, y, type(self).__name__, 3, "(C, H, W) tensors",
                                   first=None if first is None else first[0])
        if reset:
            self._check_image_shape_matches(shape)
            self.input_shape_ = shape
            self.n_features_in_ = math.prod(shape)
        else:
            self._check_same_image_shape(shape)
        known = self.classes is not None and len(self.classes) or classes is not None
        labels = None
        if not pairs:
            labels = np.asarray(list(y) if is_lazy(y) else y)
            if is_label_matrix(labels):
                raise ValueError(
                    f"{type(self).__name__} supports multilabel targets only for in-memory X "
                    "(arrays, lists, DataFrames), not for a torch Dataset."
                )
            labels = column_or_1d(labels, warn=True)
            check_consistent_length(X, labels)
        elif reset and not known:
            # the folder names, or one pass over the data
            labels = names if names is not None else np.asarray([X[i][1] for i in range(len(X))])
        if labels is not None:
            check_classification_targets(labels)
        if reset:
            self._set_classes(labels, classes)
        if not pairs:
            return X, self._encode(labels)
        served = names if names is not None else np.arange(len(self.classes_))
        if np.array_equal(self.classes_, served) and _is_int64_label(first[1]):
            return X, None  # the targets are already the class indices, as the loss takes them
        return TargetsEncoded(X, partial(_class_indices, self.classes_, names)), None


def _warn_if_channels_last(shape):
    """Warn where ``(C, H, W)`` looks like an image stored ``(H, W, C)``."""
    channels, _, width = shape
    if width in (3, 4) and channels > 4:
        warn(
            f"X has images of shape (C, H, W) = {shape}: {channels} channels, {width} pixels "
            "wide. If they are stored channels-last (n, H, W, C), pass "
            "X.transpose(0, 3, 1, 2); the estimator takes (n, C, H, W)."
        )


def _is_int64_label(label):
    """Whether a Dataset's label reaches the loss as an int64 class index (a Python int,
    or an int64 scalar); an int32, float or bool label must be encoded."""
    if isinstance(label, bool):
        return False
    if isinstance(label, int):
        return True
    return getattr(label, "dtype", None) in (torch.int64, np.dtype(np.int64))


def _ndim(X):
    """Number of dimensions of array-like X (2 for DataFrames and sparse matrices)."""
    ndim = getattr(X, "ndim", None)
    return ndim if ndim is not None else np.asarray(X).ndim


def _class_names(dataset):
    """The ``classes`` names of a Dataset whose targets index into them, else None."""
    names = getattr(dataset, "classes", None)
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return np.asarray(names)
    return None


def _class_indices(classes, names, labels):
    """``labels`` (with ``names``, indices into ``names``) as indices into ``classes``."""
    if names is not None:
        labels = names[np.asarray(labels, dtype=np.intp)]
    return label_indices(classes, labels)
