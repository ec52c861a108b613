"""The fast layer: mini-batches sliced from tensors instead of skorch's DataLoader.

skorch's default iterator reads a ``skorch.dataset.Dataset`` one row at a
time and collates the rows again; for in-memory arrays and a small network
that per-row work costs more than the network (see
:mod:`sk_softreg._batching`). :class:`FastLoopMixin` overrides skorch's
``get_iterator`` to slice tensors prepared once per fit instead, with the
same batches and the same draws from torch's RNG, so a seeded fit gives the
same weights either way. Everything else of skorch's loop is skorch's own.

The class attribute ``_fast_layer`` switches the layer, and the flat-buffer
penalty engine (:class:`~sk_softreg._engine.FlatPenaltyEngine`) with it:
subclasses whose engine needs real DataLoaders or wraps the module and the
optimizer (Accelerate) set it to False, and the tests compare both settings.
"""

import numbers

import torch

from ._batching import FAST_ITERATOR_OPTIONS, TensorBatches, fast_batches_source, prepare_tensors

__all__ = ["FastLoopMixin"]


class FastLoopMixin:
    """``get_iterator`` on tensor slices for in-memory data; ``_fast_layer`` switches it."""

    #: tensor batches and the flat-buffer penalty engine (False: skorch's DataLoader and
    #: the reference engine)
    _fast_layer = True

    def get_iterator(self, dataset, training=False):
        """Mini-batches of ``dataset``: tensor slices when possible, else skorch's DataLoader.

        When ``dataset`` is a ``skorch.dataset.Dataset`` (or a ``Subset`` of
        one, as ``ValidSplit`` makes) holding numeric numpy arrays or tensors,
        and ``iterator_train`` / ``iterator_valid`` is the default
        ``torch.utils.data.DataLoader`` with no ``iterator_*__`` options other
        than ``batch_size``, ``shuffle`` and ``drop_last``, the data are
        converted once to tensors on ``device`` and each batch is a slice of
        them (:class:`~sk_softreg._batching.TensorBatches`). It draws from the
        global torch RNG exactly as the DataLoader does, so a seeded fit gives
        the same result on both paths. During a fit the prepared tensors are
        reused for the same dataset object. Any other iterator, dataset class
        or option (e.g. ``iterator_train__num_workers=0``) uses the DataLoader.

        Parameters
        ----------
        dataset : torch.utils.data.Dataset
        training : bool, default=False
            Use the ``iterator_train`` settings (shuffled by default).

        Returns
        -------
        iterable of (Xi, yi)
        """
        prefix = "iterator_train" if training else "iterator_valid"
        kwargs = self.get_params_for(prefix)
        batch_size = kwargs.get("batch_size", self.batch_size)
        if batch_size == -1:
            batch_size = len(dataset)
        source = None
        if (
            self._fast_layer
            and getattr(self, prefix) is torch.utils.data.DataLoader
            and set(kwargs) <= FAST_ITERATOR_OPTIONS
            and isinstance(batch_size, numbers.Integral)
            and batch_size > 0
        ):
            source = fast_batches_source(dataset)
        if source is None:
            return super().get_iterator(dataset, training=training)
        X, y, sample_weight = self._prepared_tensors(dataset, source)
        return TensorBatches(
            X,
            y,
            batch_size=batch_size,
            shuffle=kwargs.get("shuffle", False),
            drop_last=kwargs.get("drop_last", False),
            sample_weight=sample_weight,
        )

    def _prepared_tensors(self, dataset, source):
        """``(X, y, sample_weight)`` of ``dataset`` on ``device``; kept while a fit runs
        (a scoring callback that predicts on the validation set reuses them)."""
        state = getattr(self, "_fit_state", None)
        cache = state.batches if state is not None else {}
        cached = cache.get(id(dataset))
        if cached is not None and cached[0] is dataset:
            return cached[1]
        tensors = prepare_tensors(*source, device=self.device)
        cache[id(dataset)] = (dataset, tensors)
        return tensors
