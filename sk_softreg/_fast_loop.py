"""The fast layer: tensor batches and skorch's per-batch bookkeeping at less cost.

For a small network a batch's forward, backward and step take a few hundred
microseconds, and two things around them cost as much again:

- skorch's default iterator reads a ``skorch.dataset.Dataset`` one row at a
  time and collates the rows again. :meth:`FastLoopMixin.get_iterator`
  slices tensors prepared once per fit instead (:mod:`sk_softreg._batching`),
  with the same batches and the same draws from torch's RNG, so a seeded fit
  gives the same weights either way;
- skorch's per-batch bookkeeping: ``notify`` calls every callback's batch
  hooks, most of them skorch's empty ``Callback`` methods; ``History`` copies
  its list of epochs to find the last row; ``module.train()`` walks the
  module tree; ``optimizer.zero_grad()`` runs torch's profiler wrapper.
  The overrides here do the same work without those costs: the same hooks
  are called in the same order, the same rows recorded, the same modes set
  and the same gradients cleared.

Each part alone measures within noise on a whole fit; together they take
about a fifth off the tabular fit (``benchmarks/levers.md``), so they are one
lever.

The class attribute ``_fast_layer`` switches the layer, and the flat-buffer
penalty engine (:class:`~sk_softreg._engine.FlatPenaltyEngine`) with it:
subclasses whose engine needs real DataLoaders or wraps the module and the
optimizer (Accelerate) set it to False, and the tests compare both settings.
"""

import numbers

import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.history import History

from ._batching import FAST_ITERATOR_OPTIONS, TensorBatches, fast_batches_source, prepare_tensors

__all__ = ["BatchHistory", "FastLoopMixin", "hook_calls"]

#: the callback methods that skorch calls once per batch
BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_grad_computed")


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

    def initialize_history(self):
        """skorch's, with a :class:`BatchHistory` while the fast layer is on."""
        if not self._fast_layer:
            return super().initialize_history()
        if isinstance(self.history_, BatchHistory):
            self.history_.clear()
        else:
            self.history_ = BatchHistory()
        return self

    def notify(self, method_name, **cb_kwargs):
        """skorch's ``notify``; during a fit, batch hooks skip skorch's empty methods.

        The net's own method runs first, then the callbacks' in order, as in
        skorch; the calls are listed once per fit (:func:`hook_calls`).
        """
        state = getattr(self, "_fit_state", None)
        hooked = state.hooks if state is not None else None
        if not hooked or method_name not in hooked:
            return super().notify(method_name, **cb_kwargs)
        for method in hooked[method_name]:
            method(self, **cb_kwargs)

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        if self._fast_layer:
            self._fit_state.hooks = {hook: hook_calls(self, hook) for hook in BATCH_HOOKS}

    def _zero_grad_optimizer(self, set_to_none=None):
        """skorch's; a torch optimizer's gradients are set to None directly, which is
        what its ``zero_grad()`` does, without torch's profiler wrapper."""
        optimizers = [getattr(self, name + "_") for name in self._optimizers]
        if (
            not self._fast_layer
            or set_to_none is not None
            or any(type(o).zero_grad is not torch.optim.Optimizer.zero_grad for o in optimizers)
        ):
            return super()._zero_grad_optimizer(set_to_none)
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None

    def _set_training(self, training=True):
        """skorch's, skipping the modules whose whole tree is in that mode already
        (and that do not override ``train``, which may do more than set flags)."""
        for name in self._modules + self._criteria:
            module = getattr(self, name + "_")
            if isinstance(module, torch.nn.Module) and not (
                self._fast_layer and _in_mode(module, training)
            ):
                module.train(training)

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


class BatchHistory(History):
    """skorch's ``History``, with constant-time ``new_batch`` and ``record_batch``.

    skorch's versions index ``self[-1]``, which copies the list of epochs;
    these take the last epoch with ``list.__getitem__``: the same row, the
    same contents. Every other method is skorch's.
    """

    def new_batch(self):
        list.__getitem__(self, -1)["batches"].append({})

    def record_batch(self, attr, value):
        list.__getitem__(self, -1)["batches"][-1][attr] = value


def hook_calls(net, hook):
    """The bound methods ``net.notify(hook, ...)`` has to call, in skorch's order.

    The net's own method unless it is ``NeuralNet``'s empty one, then each
    callback's unless it is skorch's empty ``Callback`` method (neither
    overridden by the class nor set on the instance).
    """
    calls = []
    if hook == "on_batch_begin" or getattr(type(net), hook) is not getattr(NeuralNet, hook):
        calls.append(getattr(net, hook))
    for _, cb in net.callbacks_:
        if hook in getattr(cb, "__dict__", ()) or getattr(type(cb), hook) is not getattr(
            Callback, hook
        ):
            calls.append(getattr(cb, hook))
    return calls


def _in_mode(module, training):
    """True if ``module.train(training)`` would change nothing: all flags set, no override."""
    pending = [module]
    for m in pending:  # grows while iterating: the whole tree
        if m is None:  # a submodule slot registered as None
            continue
        if m.training != training or type(m).train is not torch.nn.Module.train:
            return False
        pending.extend(m._modules.values())
    return True
