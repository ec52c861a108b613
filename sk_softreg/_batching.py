"""Mini-batches sliced from tensors held in memory: the fast path of ``get_iterator``.

skorch's default iterator is a ``torch.utils.data.DataLoader`` over a
``skorch.dataset.Dataset``: it reads one row at a time (``__getitem__``) and
stacks the rows again (``default_collate``). For data that are already
in-memory arrays this per-row work dominates the cost of a small network.

:class:`TensorBatches` converts ``X`` and ``y`` to tensors once, on the target
device, and yields ``(Xi, yi)`` batches that are slices of those tensors
(when shuffled, of the rows gathered with one ``index_select`` per batch). It reproduces the
DataLoader's use of the global torch RNG draw for draw, so a seeded fit gives the same batches,
hence bit-identical weights, on either path:

- every ``iter(DataLoader)`` draws one int64 "base seed" from the global
  generator (``_BaseDataLoaderIter.__init__``), unused without workers;
- a shuffling ``RandomSampler`` then draws a second int64 and shuffles with
  ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))``.
"""

import numpy as np
import torch
from skorch.dataset import Dataset

__all__ = [
    "FAST_ITERATOR_OPTIONS",
    "TensorBatches",
    "fast_batches_source",
    "pack_weights",
    "prepare_tensors",
    "unpack_weights",
]

#: DataLoader options the fast path implements; any other ``iterator_*__``
#: option (``num_workers``, ``collate_fn``, ``sampler``, ``pin_memory``, ...)
#: selects the DataLoader.
FAST_ITERATOR_OPTIONS = frozenset({"batch_size", "shuffle", "drop_last"})

# numpy dtype kinds that default_collate turns into tensors of the same dtype:
# bool, signed/unsigned int, float, complex.
_NUMERIC_KINDS = frozenset("biufc")


#: The key under which a weighted fit carries the sample weights in ``X``.
WEIGHT_KEY = "sample_weight"


def pack_weights(X, sample_weight):
    """``X`` together with per-row weights: ``{"X": X, "sample_weight": sample_weight}``.

    A weighted fit hands this dict to skorch as ``X``, so the weights travel
    with their rows through ``train_split``, the DataLoader (whose
    ``default_collate`` keeps the dict) or :class:`TensorBatches`, and each
    batch's ``Xi`` is such a dict. The estimator's ``infer`` gives the module
    only ``Xi["X"]``; ``get_loss`` reads the weights (:func:`unpack_weights`).
    """
    return {"X": X, WEIGHT_KEY: sample_weight}


def unpack_weights(X):
    """``(X, sample_weight)`` from :func:`pack_weights`'s dict; ``(X, None)`` for anything else."""
    if isinstance(X, dict) and WEIGHT_KEY in X:
        return X["X"], X[WEIGHT_KEY]
    return X, None


def _is_plain_array(a):
    if isinstance(a, torch.Tensor):
        return a.ndim >= 1 and a.layout == torch.strided
    return type(a) is np.ndarray and a.ndim >= 1 and a.dtype.kind in _NUMERIC_KINDS


def fast_batches_source(dataset):
    """Return ``(X, y, indices, sample_weight)`` if ``dataset`` qualifies for the fast path, else None.

    Qualifies: a ``skorch.dataset.Dataset`` (exactly that class, not a
    subclass, which may override ``transform``) whose ``X`` is a numpy array of
    a numeric dtype or a strided tensor (or :func:`pack_weights`'s dict of
    two such arrays) and whose ``y`` is None or likewise, or a (nested)
    ``torch.utils.data.Subset`` of one, as ``ValidSplit`` makes. ``indices``
    is None for the whole dataset, ``sample_weight`` None for an unweighted fit.
    """
    indices = None
    while isinstance(dataset, torch.utils.data.Subset):
        sub = np.asarray(dataset.indices, dtype=np.int64)
        indices = sub if indices is None else sub[indices]
        dataset = dataset.dataset
    if type(dataset) is not Dataset:
        return None
    X, y = dataset.X, dataset.y
    X, w = unpack_weights(X)
    if not _is_plain_array(X) or (y is not None and not _is_plain_array(y)):
        return None
    if w is not None and not (_is_plain_array(w) and len(w) == len(X)):
        return None
    if len(dataset) != len(X) or (y is not None and len(y) != len(X)):
        return None
    return X, y, indices, w


def _as_tensor(a, indices, device):
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(a)
    if indices is not None:
        t = t[torch.as_tensor(indices, device=t.device)]
    return t.to(device)


def prepare_tensors(X, y, indices, sample_weight=None, *, device):
    """``X``, ``y`` and ``sample_weight`` (rows ``indices``) as tensors on ``device``.

    Shares memory when it can; ``y`` and ``sample_weight`` may be None.
    """
    return tuple(
        None if a is None else _as_tensor(a, indices, device) for a in (X, y, sample_weight)
    )


#: the most bytes of rows that :class:`TensorBatches` gathers in one block
BLOCK_BYTES = 8 * 2**20


def block_batches(batch_size, tensors):
    """How many batches of ``batch_size`` rows of ``tensors`` to gather at once:
    as many as fit in :data:`BLOCK_BYTES`, and at least one."""
    row_bytes = sum(t[0].numel() * t.element_size() for t in tensors if t is not None and len(t))
    return max(1, BLOCK_BYTES // max(1, batch_size * row_bytes))


class TensorBatches:
    """An iterable of ``(Xi, yi)`` mini-batches cut from tensors prepared once.

    It behaves like ``DataLoader(skorch.dataset.Dataset(X, y), batch_size,
    shuffle, drop_last)`` for numeric in-memory ``X`` and ``y``: same batches,
    same dtypes, same draws from the global torch RNG, and the placeholder
    ``y`` batch of zeros of shape ``(n, 1)`` when ``y`` is None. Each
    ``iter()`` is one epoch. With ``sample_weight``, each ``Xi`` is
    :func:`pack_weights`'s dict of the rows and their weights, as the
    DataLoader gives for a ``Dataset`` of that dict.

    Parameters
    ----------
    X : torch.Tensor
        The rows to batch, already on the target device
        (see :func:`prepare_tensors`).
    y : torch.Tensor or None
    batch_size : int
    shuffle : bool
    drop_last : bool
    sample_weight : torch.Tensor or None, default=None
        One weight per row, batched with them.
    """

    def __init__(self, X, y, batch_size, shuffle, drop_last, sample_weight=None):
        self.X = X
        self.y = y
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.sample_weight = sample_weight

    def __len__(self):
        n, b = len(self.X), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def epoch_order(self):
        """Draw one epoch's row order from the global torch RNG, as ``iter()`` does.

        Returns
        -------
        torch.Tensor or None
            The permutation of the rows (on ``X``'s device) when shuffled,
            None otherwise. The draws are the DataLoader's either way.
        """
        # the DataLoader iterator's base seed (discarded without workers)
        torch.empty((), dtype=torch.int64).random_()
        if not self.shuffle:
            return None
        seed = int(torch.empty((), dtype=torch.int64).random_().item())
        generator = torch.Generator()
        generator.manual_seed(seed)
        return torch.randperm(len(self.X), generator=generator).to(self.X.device)

    def __iter__(self):
        n, b = len(self.X), self.batch_size
        order = self.epoch_order()
        stop = n - n % b if self.drop_last else n
        tensors = (self.X, self.y, self.sample_weight)
        # shuffled rows: one index_select per block of batches (up to BLOCK_BYTES),
        # then slices of it; rows in order: slices of the tensors (one block)
        rows = max(stop, 1) if order is None else b * block_batches(b, tensors)
        for block_start in range(0, stop, rows):
            block_stop = min(stop, block_start + rows)
            if order is None:
                block = [None if t is None else t[block_start:block_stop] for t in tensors]
            else:
                index = order[block_start:block_stop]
                block = [None if t is None else t.index_select(0, index) for t in tensors]
            for start in range(0, block_stop - block_start, b):
                Xi, yi, wi = (None if t is None else t[start:start + b] for t in block)
                if yi is None:
                    yi = torch.zeros(len(Xi), 1)
                yield (Xi if wi is None else pack_weights(Xi, wi)), yi
