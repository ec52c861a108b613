"""Image inputs of the classifier: ``(n, C, H, W)``, ``(n, H, W)`` or flat ``(n, H*W)`` arrays.

:class:`ImageInputMixin` validates ``X`` as images and fixes ``input_shape_``
at the first fit: a flat array is reshaped by ``image_shape`` when given, or
into the largest square (else one row of pixels).
"""

import math

import numpy as np
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_array, validate_data

from ._validation import FLOAT_DTYPES

__all__ = ["ImageInputMixin"]


class ImageInputMixin:
    """``_check_X``: validated float32 images of shape ``(n, C, H, W)``; ``input_shape_``."""

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
        return np.ascontiguousarray(images, dtype=np.float32)

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


def _ndim(X):
    """Number of dimensions of array-like X (2 for DataFrames and sparse matrices)."""
    ndim = getattr(X, "ndim", None)
    return ndim if ndim is not None else np.asarray(X).ndim
