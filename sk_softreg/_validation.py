"""Input checks shared by both estimators: float dtypes, lazy (Dataset) inputs, labels."""

import numpy as np
import torch
from skorch.helper import SliceDataset

__all__ = [
    "FLOAT_DTYPES",
    "TargetsEncoded",
    "as_float32",
    "first_sample_shape",
    "is_lazy",
    "label_indices",
]

#: the dtypes ``check_array`` keeps; anything else is converted to the first
FLOAT_DTYPES = (np.float32, np.float64)


def as_float32(X):
    """Validated (finite) ``X`` as a C-contiguous float32 array, the networks' dtype.

    A float64 value beyond float32's range would become infinite in the cast; it is
    an error, worded as scikit-learn's for non-finite input.
    """
    out = np.ascontiguousarray(X, dtype=np.float32)
    if out.dtype != X.dtype and not np.isfinite(out).all():
        raise ValueError("Input X contains infinity or a value too large for dtype('float32').")
    return out


def label_indices(classes, labels):
    """The index of each of ``labels`` in ``classes``, which may be in any order.

    ``classes`` is a classifier's ``classes_``: sorted when inferred from y, in the
    user's order when given as skorch's ``classes`` parameter.

    Raises
    ------
    ValueError
        If a label is not among ``classes`` (scikit-learn's wording, the labels as a
        plain list).
    """
    classes, labels = np.asarray(classes), np.asarray(labels)
    order = np.argsort(classes, kind="stable")
    ranked = classes[order]
    at = np.searchsorted(ranked, labels).clip(0, len(ranked) - 1)
    unseen = ranked[at] != labels
    if np.any(unseen):
        raise ValueError(
            f"y contains previously unseen labels: {np.unique(labels[unseen]).tolist()}"
        )
    return order[at].astype(np.int64)


def is_lazy(X):
    """True for lazy inputs: a torch ``Dataset`` or a skorch ``SliceDataset``."""
    return isinstance(X, (torch.utils.data.Dataset, SliceDataset))


def first_sample_shape(X, y, name, ndim, expected):
    """Shape of the first sample of lazy ``X`` (a Dataset of ``(x, y)`` pairs when
    ``y`` is None, else a SliceDataset or Dataset of samples), checked to have
    ``ndim`` dimensions; ``expected`` describes them in the error."""
    if y is None and not isinstance(X, torch.utils.data.Dataset):
        raise ValueError(f"{name} got a SliceDataset X without y; pass the targets as y.")
    first = X[0][0] if y is None else X[0]
    shape = tuple(int(s) for s in getattr(first, "shape", ()))
    if len(shape) != ndim:
        raise ValueError(
            f"{name} expects the samples of a Dataset to be {expected}; the first sample "
            f"has shape {shape}."
        )
    return shape


class TargetsEncoded(torch.utils.data.Dataset):
    """A ``Dataset`` of ``(x, y)`` pairs served as ``(x, encode(y))``.

    ``encode`` maps an array of targets (one per row) to the encoding the
    training set holds (class indices, standardized y); it is called on one
    target at a time. For a skorch ``Dataset`` of arrays, prefer encoding its
    ``y`` once (see ``SoftRegMixin._encoded_validation``).
    """

    def __init__(self, dataset, encode):
        self.dataset = dataset
        self.encode = encode

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, self.encode(np.asarray(y)[None])[0]
