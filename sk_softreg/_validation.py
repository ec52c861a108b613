"""Input checks shared by both estimators: float dtypes, lazy (Dataset) inputs, labels."""

import numpy as np
import torch
from skorch.helper import SliceDataset

from ._batching import unpack_weights

__all__ = [
    "FLOAT_DTYPES",
    "TargetsEncoded",
    "as_float32",
    "first_sample_shape",
    "is_lazy",
    "label_indices",
    "predicted_sample_shape",
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


def first_sample_shape(X, y, name, ndim, expected, first=None):
    """Shape of the first sample of lazy ``X`` (a Dataset of ``(x, y)`` pairs when
    ``y`` is None, else a SliceDataset or Dataset of samples), checked to have
    ``ndim`` dimensions; ``expected`` describes them in the error. ``first``: that
    sample, where the caller has read it already."""
    if y is None and not isinstance(X, torch.utils.data.Dataset):
        raise ValueError(f"{name} got a SliceDataset X without y; pass the targets as y.")
    _check_not_empty(X, name)
    if first is None:
        first = X[0][0] if y is None else X[0]
    if isinstance(first, (tuple, list)):
        raise ValueError(
            f"{name} got y, but the Dataset X yields (x, y) pairs: pass y=None, or the "
            "samples alone (skorch's SliceDataset(X, idx=0)) with y."
        )
    if not hasattr(first, "shape"):
        raise ValueError(
            f"{name} expects the samples of a Dataset to be {expected}; the first sample is "
            f"a {type(first).__module__}.{type(first).__qualname__}. Convert each sample "
            "to a float32 tensor in the Dataset (for PIL images, torchvision's "
            "v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]))."
        )
    shape = tuple(int(s) for s in first.shape)
    if len(shape) != ndim:
        raise ValueError(
            f"{name} expects the samples of a Dataset to be {expected}; the first sample "
            f"has shape {shape}."
        )
    if str(getattr(first, "dtype", "")).rsplit(".", 1)[-1] != "float32":
        raise ValueError(
            f"{name} expects the samples of a Dataset to be float32 {expected}; the first "
            f"sample is {first.dtype}."
        )
    return shape


def predicted_sample_shape(X, name):
    """Shape of the first sample of a lazy ``X`` to predict (a Dataset of samples or of
    ``(x, y)`` pairs, packed with weights or not); 0 samples is an error."""
    _check_not_empty(X, name)
    first = X[0]
    if isinstance(first, (tuple, list)):
        first = first[0]
    return tuple(int(s) for s in getattr(unpack_weights(first)[0], "shape", ()))


def _check_not_empty(X, name):
    if len(X) == 0:
        raise ValueError(
            f"Found a Dataset with 0 sample(s) while a minimum of 1 is required by {name}."
        )


class TargetsEncoded(torch.utils.data.Dataset):
    """A ``Dataset`` of ``(x, y)`` pairs served as ``(x, encode(y))``.

    ``encode`` maps an array of targets (one per row) to the encoding the
    training set holds (class indices, standardized y); it is called on one
    target at a time, and is picklable where the Dataset goes to DataLoader
    workers. For a skorch ``Dataset`` of arrays, prefer encoding its ``y`` once
    (see ``SoftRegMixin._encoded_validation``).
    """

    def __init__(self, dataset, encode):
        self.dataset = dataset
        self.encode = encode

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, self.encode(np.asarray(y)[None])[0]
