"""The per-batch bookkeeping of skorch's training loop, at less cost per batch.

For a small network a batch's forward, backward and optimizer step take a few
hundred microseconds, and skorch's bookkeeping around them (callback
notifications, history rows, the batch length, ``zero_grad``) adds tens of
microseconds. The estimators keep skorch's loop and its semantics and cut
only work that changes nothing:

- :class:`BatchHistory` appends and fills the batch rows of skorch's
  ``History`` without going through ``History.__getitem__``, which copies the
  list of epochs on every call;
- :func:`implements` tells which callbacks have a per-batch hook at all, so
  that ``notify`` skips skorch's no-op ``Callback`` methods;
- :func:`batch_length` reads a tensor batch's length with ``len``;
- :func:`set_grads_to_none` is ``optimizer.zero_grad()`` without torch's
  profiler and compiler wrappers, for optimizers that keep torch's own
  ``zero_grad``;
- :func:`closure_free` tells when ``optimizer.step(closure)`` may be replaced
  by the closure's work and then ``optimizer.step()``: the same operations in
  the same order;
- :func:`only_known` tells when a per-batch hook list holds only methods
  known not to write the weights (so that values computed at the end of one
  batch still hold at the start of the next).
"""

import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.dataset import get_len
from skorch.history import History
from torch.optim.optimizer import _global_optimizer_pre_hooks

__all__ = [
    "BATCH_HOOKS",
    "BatchHistory",
    "batch_length",
    "closure_free",
    "hook_calls",
    "implements",
    "only_known",
    "set_grads_to_none",
]

#: The callback methods that skorch calls once per batch.
BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_grad_computed")
#: Those whose ``NeuralNet`` method is empty (skorch 1.4: ``pass``).
_EMPTY_NET_HOOKS = ("on_batch_end", "on_grad_computed")


class BatchHistory(History):
    """skorch's ``History``, with constant-time ``new_batch`` and ``record_batch``.

    skorch's versions index ``self[-1]``, and ``History.__getitem__`` copies
    the whole list of epochs (``to_list()``) before taking the last one. These
    take the last epoch with ``list.__getitem__``: the same row, the same
    contents; every other method (indexing, ``record``, ``to_file``) is
    skorch's.
    """

    def new_batch(self):
        """Register a new batch row for the current epoch."""
        list.__getitem__(self, -1)["batches"].append({})

    def record_batch(self, attr, value):
        """Add a new value to the given column for the current batch."""
        list.__getitem__(self, -1)["batches"][-1][attr] = value


def implements(callback, hook):
    """Whether calling ``callback.<hook>`` can do anything.

    False only when the method is skorch's no-op ``Callback.<hook>``, neither
    overridden by the callback's class nor set on the instance.
    """
    if hook in getattr(callback, "__dict__", ()):
        return True
    return getattr(type(callback), hook, None) is not getattr(Callback, hook)


def hook_calls(net, hook):
    """The bound methods that ``net.notify(hook, ...)`` has to call, in skorch's order.

    The net's own method first, unless it is ``NeuralNet``'s empty one, then
    each callback that :func:`implements` the hook.
    """
    calls = []
    if hook not in _EMPTY_NET_HOOKS or getattr(type(net), hook) is not getattr(NeuralNet, hook):
        calls.append(getattr(net, hook))
    calls += [getattr(cb, hook) for _, cb in net.callbacks_ if implements(cb, hook)]
    return calls


def only_known(calls, known):
    """Whether each bound method in ``calls`` is one of the functions ``known``.

    A subclass that overrides the method, or an instance that sets it, makes
    it unknown.
    """
    return all(getattr(call, "__func__", None) in known for call in calls)


def batch_length(Xi):
    """The number of rows of a batch's ``Xi``: ``len`` for a tensor, else skorch's ``get_len``."""
    if type(Xi) is torch.Tensor:
        return len(Xi)
    return get_len(Xi)


def set_grads_to_none(optimizer):
    """``optimizer.zero_grad()``, for an optimizer that keeps torch's own method.

    Sets ``p.grad = None`` for every parameter of every group, which is what
    ``torch.optim.Optimizer.zero_grad(set_to_none=True)`` does, without its
    per-call profiler range and ``torch._disable_dynamo`` wrapper.

    Returns
    -------
    bool
        False, having done nothing, when ``type(optimizer)`` overrides
        ``zero_grad`` (e.g. Accelerate's wrapper): then call it instead.
    """
    if type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad:
        return False
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None
    return True


def closure_free(optimizer):
    """Whether ``optimizer.step(closure)`` equals the closure's work, then ``optimizer.step()``.

    True for an optimizer of ``torch.optim`` other than ``LBFGS`` (they call
    the closure once, first, under ``torch.enable_grad()``) when no step
    pre-hook is registered (a pre-hook runs before the closure in the one
    order and after it in the other).
    """
    return (
        type(optimizer).__module__.startswith("torch.optim.")
        and not isinstance(optimizer, torch.optim.LBFGS)
        and not getattr(optimizer, "_optimizer_step_pre_hooks", None)
        and not _global_optimizer_pre_hooks
    )
