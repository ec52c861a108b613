"""Mini-batches sliced from tensors held in memory: the fast path of ``get_iterator``.

skorch's default iterator is a ``torch.utils.data.DataLoader`` over a
``skorch.dataset.Dataset``: it reads one row at a time (``__getitem__``) and
stacks the rows again (``default_collate``). For data that are already
in-memory arrays this per-row work dominates the cost of a small network.

:class:`TensorBatches` converts ``X`` and ``y`` to tensors once, on the target
device, and yields ``(Xi, yi)`` batches that are slices (or, when shuffled,
``index_select`` gathers) of those tensors. It reproduces the DataLoader's use
of the global torch RNG draw for draw, so a seeded fit gives the same batches,
hence bit-identical weights, on either path:

- every ``iter(DataLoader)`` draws one int64 "base seed" from the global
  generator (``_BaseDataLoaderIter.__init__``), unused without workers;
- a shuffling ``RandomSampler`` then draws a second int64 and shuffles with
  ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))``.
"""

import numpy as np
import torch
from skorch.dataset import Dataset

__all__ = ["TensorBatches", "fast_batches_source", "prepare_tensors"]

#: DataLoader options the fast path implements; any other ``iterator_*__``
#: option (``num_workers``, ``collate_fn``, ``sampler``, ``pin_memory``, ...)
#: selects the DataLoader.
FAST_ITERATOR_OPTIONS = frozenset({"batch_size", "shuffle", "drop_last"})

# numpy dtype kinds that default_collate turns into tensors of the same dtype:
# bool, signed/unsigned int, float, complex.
_NUMERIC_KINDS = frozenset("biufc")


def _is_plain_array(a):
    if isinstance(a, torch.Tensor):
        return a.ndim >= 1 and a.layout == torch.strided
    return type(a) is np.ndarray and a.ndim >= 1 and a.dtype.kind in _NUMERIC_KINDS


def fast_batches_source(dataset):
    """Return ``(X, y, indices)`` if ``dataset`` qualifies for the fast path, else None.

    Qualifies: a ``skorch.dataset.Dataset`` (exactly that class, not a
    subclass, which may override ``transform``) whose ``X`` is a numpy array of
    a numeric dtype or a strided tensor and whose ``y`` is None or likewise, or
    a (nested) ``torch.utils.data.Subset`` of one, as ``ValidSplit`` makes.
    ``indices`` is None for the whole dataset.
    """
    indices = None
    while isinstance(dataset, torch.utils.data.Subset):
        sub = np.asarray(dataset.indices, dtype=np.int64)
        indices = sub if indices is None else sub[indices]
        dataset = dataset.dataset
    if type(dataset) is not Dataset:
        return None
    X, y = dataset.X, dataset.y
    if not _is_plain_array(X) or (y is not None and not _is_plain_array(y)):
        return None
    if len(dataset) != len(X) or (y is not None and len(y) != len(X)):
        return None
    return X, y, indices


def _as_tensor(a, indices, device):
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(a)
    if indices is not None:
        t = t[torch.as_tensor(indices, device=t.device)]
    return t.to(device)


def prepare_tensors(X, y, indices, device):
    """``X`` and ``y`` (rows ``indices``) as tensors on ``device``; shares memory when it can."""
    return _as_tensor(X, indices, device), None if y is None else _as_tensor(y, indices, device)


class TensorBatches:
    """An iterable of ``(Xi, yi)`` mini-batches cut from tensors prepared once.

    It behaves like ``DataLoader(skorch.dataset.Dataset(X, y), batch_size,
    shuffle, drop_last)`` for numeric in-memory ``X`` and ``y``: same batches,
    same dtypes, same draws from the global torch RNG, and the placeholder
    ``y`` batch of zeros of shape ``(n, 1)`` when ``y`` is None. Each
    ``iter()`` is one epoch.

    Parameters
    ----------
    X : torch.Tensor
        The rows to batch, already on the target device
        (see :func:`prepare_tensors`).
    y : torch.Tensor or None
    batch_size : int
    shuffle : bool
    drop_last : bool
    """

    def __init__(self, X, y, batch_size, shuffle, drop_last):
        self.X = X
        self.y = y
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)

    def __len__(self):
        n, b = len(self.X), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        n, b = len(self.X), self.batch_size
        # the DataLoader iterator's base seed (discarded without workers)
        torch.empty((), dtype=torch.int64).random_()
        order = None
        if self.shuffle:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            generator = torch.Generator()
            generator.manual_seed(seed)
            order = torch.randperm(n, generator=generator).to(self.X.device)
        stop = n - n % b if self.drop_last else n
        for start in range(0, stop, b):
            if order is None:
                Xi = self.X[start:start + b]
                yi = None if self.y is None else self.y[start:start + b]
            else:
                idx = order[start:start + b]
                Xi = self.X.index_select(0, idx)
                yi = None if self.y is None else self.y.index_select(0, idx)
            if yi is None:
                yi = torch.zeros(len(Xi), 1)
            yield Xi, yi
