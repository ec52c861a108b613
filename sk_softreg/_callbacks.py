"""The callbacks the estimators add to skorch's defaults (``get_default_callbacks``).

- :class:`SwitchedEarlyStopping` (``"early_stopping"``): skorch's
  ``EarlyStopping``, idle in fits where the net's early stopping is off;
- :class:`ValidationScore` (``"valid_score"``, early stopping on a ``scoring``
  other than ``"loss"``): the net's score on the validation set, per epoch;
- :class:`NonFiniteGuard` (``"non_finite"``): stops a fit whose loss became
  NaN or infinite, with :class:`~sk_softreg.NonFiniteLossError`;
- :class:`~sk_softreg._progress.EpochProgressBar` (``"progress"``,
  ``verbose >= 1``).
"""

import math
from copy import deepcopy

import torch
from skorch.callbacks import Callback, EarlyStopping

from ._exceptions import NonFiniteLossError

__all__ = [
    "NonFiniteGuard",
    "SwitchedEarlyStopping",
    "ValidationScore",
    "check_finite_weights",
    "fail_non_finite",
]


class SwitchedEarlyStopping(EarlyStopping):
    """skorch's ``EarlyStopping``, idle in the fits where the net's early stopping is off
    (``early_stopping="auto"`` on small data or in ``partial_fit``).

    The best epoch's weights are kept for every module of the net, not only
    ``module_`` as skorch keeps them: a regressor whose module returns means
    only learns its log-variance in a second module, ``log_var_``.
    """

    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net, **kwargs)
        self.best_other_weights_ = None

    def on_epoch_end(self, net, **kwargs):
        if not net._early_stopping_active():
            return
        super().on_epoch_end(net, **kwargs)  # raises KeyboardInterrupt to stop
        if self.load_best and self.best_epoch_ == net.history[-1, "epoch"]:
            self.best_other_weights_ = {
                name: deepcopy(module.state_dict()) for name, module in _other_modules(net)
            }

    def on_train_end(self, net, **kwargs):
        if not net._early_stopping_active():
            return
        restores = (self.load_best and self.best_epoch_ != net.history[-1, "epoch"]
                    and self.best_model_weights_ is not None)
        super().on_train_end(net, **kwargs)
        if restores and self.best_other_weights_:
            for name, module in _other_modules(net):
                module.load_state_dict(self.best_other_weights_[name])

    def __getstate__(self):
        state = super().__getstate__()
        state["best_other_weights_"] = None  # as skorch drops best_model_weights_
        return state


def _other_modules(net):
    """``(name, module)`` of the net's modules besides ``module_`` (skorch's ``_modules``)."""
    for name in net._modules:
        module = getattr(net, name + "_", None)
        if name != "module" and isinstance(module, torch.nn.Module):
            yield name, module


class ValidationScore(Callback):
    """Record ``valid_score`` each epoch: the net's ``scoring`` on the validation set.

    The scorer sees the net itself, as scikit-learn's scorers do, with the
    validation rows in the user's labels or units and their sample weights.
    Runs only in fits where the net's early stopping is on.
    """

    def on_train_begin(self, net, **kwargs):
        self.data_ = None

    def on_epoch_end(self, net, dataset_valid=None, **kwargs):
        if dataset_valid is None or not net._early_stopping_active():
            return
        if self.data_ is None or self.data_[0] is not dataset_valid:
            self.data_ = (dataset_valid, *net._validation_data(dataset_valid))
        net.history.record("valid_score", net._validation_score(*self.data_[1:]))

    def on_train_end(self, net, **kwargs):
        self.data_ = None  # no copy of the validation data in a pickled net


class NonFiniteGuard(Callback):
    """Stop training as soon as a batch's training or validation loss is not finite.

    skorch already reads every batch loss to the host (``loss.item()`` in
    ``run_single_epoch``) and records it in history, so checking the recorded
    float adds no device synchronization.
    """

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        epoch = list.__getitem__(net.history, -1)  # history[-1], without copying the list
        batches = epoch["batches"]
        key = "train_loss" if training else "valid_loss"
        loss = batches[-1].get(key) if batches else None
        if loss is None or math.isfinite(loss):
            return
        number = sum(key in b for b in batches)  # the epoch's training or validation batch
        where = f"at epoch {epoch['epoch']}, batch {number}"
        if training:
            fail_non_finite(net, f"diverged: the training loss became {loss} {where}")
        fail_non_finite(
            net,
            f"stopped: the validation loss became {loss} {where}",
            hint="Check the validation data for NaN or infinite values. If they are "
            "finite, the network diverged: try",
        )


def check_finite_weights(net):
    """Raise :class:`~sk_softreg.NonFiniteLossError` if a module's weights are not finite."""
    for name in net._modules:
        module = getattr(net, name + "_", None)
        if module is None:
            continue
        params = [p for p in module.parameters() if p.is_floating_point()]
        if params and not all(bool(torch.isfinite(p).all()) for p in params):
            fail_non_finite(
                net,
                f"diverged: the weights of {name!r} became non-finite by the end of epoch "
                f"{len(net.history)}",
            )


def fail_non_finite(net, what, hint="Try"):
    """Leave ``net`` unfitted (predict raises NotFittedError, not NaN) and raise."""
    net.initialized_ = False
    raise NonFiniteLossError(
        f"Training of {type(net).__name__} {what}. {hint} a smaller learning "
        f"rate (lr={net.lr!r} now), standardized inputs or smaller penalty weights."
    )
