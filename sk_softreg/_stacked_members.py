"""The fits of a stacked search, each set up by its own estimator, and how they group.

:func:`prepare_member` takes an sk_softreg estimator through its ``fit`` up to
the first epoch (checks, weights, seeding, ``initialize()``, the
early-stopping split, the tensor batches) and says why it cannot be stacked,
if it cannot; :func:`stack_key` is what members must share to train in one
stack (:mod:`sk_softreg._stacked`).
"""

import torch

from ._batching import TensorBatches
from ._stacked_optim import stackable_adam_reason

__all__ = ["STACKABLE_PARAMS", "Member", "penalized_names", "prepare_member", "stack_key"]

#: estimator parameters that may differ between the members of one stack
STACKABLE_PARAMS = (
    "lambda1", "lambda2", "alpha", "lambda_features", "tau", "class_weight", "random_state",
)


#: the epoch scores a stack records in each member's history (early stopping may watch them;
#: also ``valid_score``, the estimator's ``scoring``, where its ValidationScore callback is on)
_RECORDED = ("valid_loss", "valid_acc", "train_loss")


class Member:
    """One fit (a candidate on a fold) set up by its estimator and ready to train.

    Attributes
    ----------
    net : SoftRegMixin
        The estimator, initialized; fitted when :func:`train_stack` returns
        without an ``error``.
    X, y, sample_weight : arrays
        The validated data its ``_after_fit`` takes.
    train, valid : TensorBatches or None
        Its training and validation batches.
    dataset_valid : Dataset or None
        Its validation set (the regressor's ``std_scale_`` reads it after training).
    rng : torch.ByteTensor
        Its torch RNG state at the start of training.
    reason : str or None
        Why it cannot be stacked (it is fitted on its own instead).
    error : Exception or None
        What its fit raised (it then gets ``error_score``).
    """

    def __init__(self, net):
        self.net = net
        self.X = self.y = self.sample_weight = None
        self.train = self.valid = self.rng = None
        self.dataset_valid = None
        self.reason = None
        self.error = None
        self.running = True
        self.stopper = None


def prepare_member(net, X, y, sample_weight=None, **fit_params):
    """Set up ``net`` as its ``fit(X, y, sample_weight)`` would, up to the first epoch.

    The steps are those of :meth:`~sk_softreg._base.SoftRegMixin.fit` and of
    skorch's ``fit_loop`` before its epochs, in their order, so the member's
    initialization and random stream are the independent fit's.

    Returns
    -------
    Member
    """
    member = Member(net)
    net._validate_hyperparameters()
    X, y, sample_weight = net._fit_data(X, y, sample_weight, reset=True)
    member.X, member.y, member.sample_weight = X, y, sample_weight
    with net._seeded():
        net.initialize()
        Xw = net._with_weights(X, sample_weight)
        net.check_data(Xw, y)
        dataset_train, dataset_valid = net.get_split_datasets(Xw, y, **fit_params)
        member.train = net.get_iterator(dataset_train, training=True)
        if dataset_valid is not None:
            member.valid = net.get_iterator(dataset_valid, training=False)
            member.dataset_valid = dataset_valid
        member.rng = torch.get_rng_state()
    if net.lambda_features:
        net._feature_weight()  # a module without an input nn.Linear fails as its fit would
    member.reason = _unstackable_reason(member, fit_params)
    return member


def _unstackable_reason(member, fit_params):
    """Why ``member`` cannot train in a stack, or None."""
    net = member.net
    if fit_params:
        return f"fit parameters for the module's forward ({', '.join(sorted(fit_params))})"
    if net.callbacks:
        return "callbacks of your own"
    if getattr(net, "train_transform", None) is not None:
        return "a train_transform"
    if not isinstance(member.train, TensorBatches) or (
        member.valid is not None and not isinstance(member.valid, TensorBatches)
    ):
        return "data or iterator options that do not go through tensor batches"
    if getattr(net, "log_var_", None) is not None:
        return "a module that returns means only (its log-variance is a second module)"
    criterion = net.criterion_
    if not isinstance(getattr(criterion, "reduction", None), str):
        return f"the criterion {type(criterion).__name__} (no 'reduction' to set to 'none')"
    if getattr(criterion, "weight", None) is not None:
        return "a criterion with class weights (use class_weight)"
    module_params = {id(p) for p in net.module_.parameters()}
    learnable = {id(p) for _, p in net.get_all_learnable_params()}
    if learnable != module_params:
        return "learnable parameters outside module_"
    callbacks = dict(net.callbacks_)
    stopper = callbacks.get("early_stopping")
    recorded = _RECORDED + (("valid_score",) if "valid_score" in callbacks else ())
    if stopper is not None and stopper.monitor not in recorded:
        return f"early stopping on {stopper.monitor!r} (stacks record {', '.join(_RECORDED)})"
    reason = stackable_adam_reason(net.optimizer_)
    if reason is not None:
        return reason
    return _unstackable_layer(net.module_)


def _unstackable_layer(module):
    """A reason naming the first layer that ``vmap`` cannot train, or None."""
    for name, sub in module.named_modules():
        if (
            isinstance(sub, torch.nn.modules.batchnorm._BatchNorm)
            and sub.track_running_stats
        ):
            return (
                f"the layer {name or type(module).__name__!r} ({type(sub).__name__}) updates "
                "running statistics in training mode, which vmap cannot stack"
            )
    return None


def stack_key(member):
    """What must be equal for members to train in one stack.

    The architecture as built (the module's repr and parameter shapes, so a
    fold with fewer classes goes apart), the optimizer's settings (a
    learning rate resolved from the data size included), the batch sizes, the
    epochs, the penalty method and selection, and whether there is a
    validation set. Members whose KL needs a dropout-free pass (the
    regressor's at ``alpha > 0`` with dropout) share a stack with those whose
    KL does not: the stack runs that pass for all of them.
    """
    net = member.net
    group = net.optimizer_.param_groups[0]
    shapes = tuple((n, tuple(p.shape), p.dtype) for n, p in net.module_.named_parameters())
    stopper = dict(net.callbacks_).get("early_stopping")
    stop = None
    if stopper is not None and net._early_stopping_active():
        stop = (stopper.patience, stopper.threshold, stopper.threshold_mode, stopper.monitor)
    return (
        type(net), repr(net.module_), shapes, str(net.device), type(net.optimizer_),
        tuple((k, repr(v)) for k, v in sorted(group.items()) if k != "params"),
        type(net.criterion_), repr(net.criterion_), getattr(net, "kl", None),
        member.train.batch_size, member.train.shuffle, member.train.drop_last,
        None if member.valid is None else member.valid.batch_size,
        net.max_epochs, stop, net.l1_method, tuple(penalized_names(net)),
    )


def penalized_names(net):
    penalized = {id(p) for p in net._penalized_params()}
    return [n for n, p in net.module_.named_parameters() if id(p) in penalized]
