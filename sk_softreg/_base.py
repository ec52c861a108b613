"""The soft-regularization mixin shared by both estimators.

It sits in front of a ``skorch.NeuralNet`` subclass in the MRO and changes only
skorch's extension points:

- ``get_loss`` adds the penalty terms to the *training* loss only;
- ``train_step`` applies the proximal L1 step after ``optimizer.step()``;
- ``initialize_module`` passes the shape arguments inferred from the data;
- ``on_epoch_begin`` / ``on_epoch_end`` record the penalty terms in history;
- ``fit`` / ``partial_fit`` validate parameters and data and seed torch;
- ``get_iterator`` slices in-memory tensors instead of using a DataLoader
  when it can (see :mod:`sk_softreg._batching`).
"""

import copy
import inspect
import math
import numbers
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_parameter_constraints,
)

from ._batching import FAST_ITERATOR_OPTIONS, TensorBatches, fast_batches_source, prepare_tensors
from ._exceptions import NonFiniteLossError
from ._progress import EpochProgressBar
from .penalties import (
    add_l2_grad_,
    l1_penalty,
    l2_penalty,
    prox_l1_,
    prox_thresholds,
    select_penalized,
)

_NON_NEGATIVE = Interval(numbers.Real, 0, None, closed="left")
_HISTORY_TERMS = ("train_l1", "train_l2", "train_kl")
# fused Adam/AdamW kernels exist on these devices in every supported torch (>= 2.4)
_FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)
_FUSED_DEVICE_TYPES = frozenset({"cpu", "cuda"})
_FUSED_OFF_KEYS = frozenset({"fused", "foreach", "differentiable"})


def resolve_device(device):
    """Map ``"auto"`` to ``"cuda"`` when CUDA is available, else ``"cpu"``."""
    if isinstance(device, str) and device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class SoftRegMixin:
    """λ1 / λ2 / α soft regularization on top of a ``skorch.NeuralNet``.

    Subclasses provide ``_default_module``, ``_validate_fit_data``,
    ``_inferred_module_kwargs`` and ``_kl_term`` (and may override ``_data_loss``).
    """

    _parameter_constraints = {
        "lambda1": [_NON_NEGATIVE],
        "lambda2": [_NON_NEGATIVE],
        "alpha": [_NON_NEGATIVE],
        "penalize": [StrOptions({"weights", "all"}), callable],
        "l1_method": [StrOptions({"proximal", "subgradient"})],
        "random_state": ["random_state"],
    }
    _finite_params = ("lambda1", "lambda2", "alpha")
    # subclasses whose engine needs real DataLoaders (Accelerate) switch off
    # the tensor-slicing fast path of ``get_iterator``
    _use_fast_path = True

    # ------------------------------------------------------------------
    # device="auto": the parameter is stored as given; skorch reads the
    # resolved device through this property.
    @property
    def device(self):
        return resolve_device(self._device_param)

    @device.setter
    def device(self, value):
        self._device_param = value

    def _get_param_names(self):
        # skorch lists every public key of __dict__; drop private state
        # (``_params_to_validate``, ``_device_param``, ...) and add ``device``.
        names = [k for k in super()._get_param_names() if not k.startswith("_")]
        return names + ["device"]

    def get_params(self, deep=True, **kwargs):
        params = super().get_params(deep=deep, **kwargs)
        params["device"] = self._device_param
        return params

    def set_params(self, **kwargs):
        """Set parameters; like skorch's, but only stores ``callbacks`` on an uninitialized net.

        skorch builds the callbacks inside ``set_params``; scikit-learn expects
        ``set_params`` to store values and leave their checks to ``fit``.
        """
        if "callbacks" in kwargs and not self.initialized_:
            self.callbacks = kwargs.pop("callbacks")
        return super().set_params(**kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_epoch_terms", None)
        _drop_lr_schedulers(state)
        state.pop("_batches_cache", None)
        state.pop("_penalized_cache", None)
        state.pop("_step_state", None)
        return state

    def __setstate__(self, state):
        requested = state.pop("_device_param", "cpu")
        state["device"] = resolve_device(requested)
        super().__setstate__(state)
        loaded = self.__dict__.pop("device")
        # keep "auto" as given; otherwise follow skorch (cuda -> cpu fallback)
        if isinstance(loaded, torch.device) and not isinstance(requested, torch.device):
            loaded = str(loaded)  # skorch's fallback returns torch.device("cpu")
        self._device_param = requested if requested == "auto" else loaded

    def __sklearn_is_fitted__(self):
        return bool(getattr(self, "initialized_", False)) and hasattr(self, "n_features_in_")

    # ------------------------------------------------------------------
    # parameter checks (run in fit, never in __init__)
    def _validate_hyperparameters(self):
        params = {name: getattr(self, name) for name in self._parameter_constraints}
        validate_parameter_constraints(
            self._parameter_constraints, params, caller_name=type(self).__name__
        )
        for name in self._finite_params:
            value = getattr(self, name)
            if not math.isfinite(value):
                constraint = self._parameter_constraints[name][0]
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be {constraint}."
                    f" Got {value!r} instead."
                )
        self._validate_device()

    def _validate_device(self):
        device = self._device_param
        if device is None or (isinstance(device, str) and device == "auto"):
            return
        try:
            parsed = torch.device(device)
        except (RuntimeError, TypeError):
            raise InvalidParameterError(
                f"The 'device' parameter of {type(self).__name__} must be 'auto', None, a "
                f"torch.device or a device string such as 'cpu' or 'cuda:0'. Got {device!r} instead."
            ) from None
        if parsed.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False). Use device='cpu' or device='auto'."
            )

    # ------------------------------------------------------------------
    # fitting
    def fit(self, X, y=None, **fit_params):
        """Validate the data, initialize the network (unless ``warm_start``) and train.

        Parameters
        ----------
        X : array-like
            Training data; see the class docstring for the accepted shapes.
        y : array-like
            Targets.
        **fit_params : dict
            Passed on to the module's ``forward`` and to ``train_split``.

        Returns
        -------
        self
        """
        self._validate_hyperparameters()
        reset = not (self.warm_start and self.initialized_)
        X, y = self._validate_fit_data(X, y, reset=reset)
        with self._seeded():
            if reset:
                self.initialize()
            super().partial_fit(X, y, **fit_params)
        self._after_fit(X, y)
        return self

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Train for ``max_epochs`` more epochs, initializing only on the first call.

        Parameters
        ----------
        X : array-like
        y : array-like
        classes : array-like, default=None
            Classifier only: all class labels, for a first call that may not see
            every class.
        **fit_params : dict

        Returns
        -------
        self
        """
        self._validate_hyperparameters()
        reset = not self.initialized_
        X, y = self._validate_fit_data(X, y, reset=reset, classes=classes)
        if reset:
            self.initialize()
        super().partial_fit(X, y, **fit_params)
        self._after_fit(X, y)
        return self

    @contextmanager
    def _seeded(self):
        """Seed torch from ``random_state`` inside, and restore the global RNG after."""
        if self.random_state is None:
            yield
            return
        if isinstance(self.random_state, numbers.Integral):
            seed = int(self.random_state)
        else:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        device = torch.device(self.device) if self.device is not None else torch.device("cpu")
        cuda_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            yield

    def _after_fit(self, X, y):
        self._check_finite_weights()
        params = self._penalized_params()
        total = sum(p.numel() for p in params)
        zeros = sum(int((p == 0).sum()) for p in params)
        self.sparsity_ = zeros / total if total else 0.0

    # ------------------------------------------------------------------
    # training faults: skorch already reads every batch loss to the host
    # (``loss.item()`` in ``run_single_epoch``) and records it in history, so
    # checking the recorded float adds no device sync.
    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        super().on_batch_end(net, batch=batch, training=training, **kwargs)
        epoch = self.history[-1]
        batches = epoch["batches"]
        key = "train_loss" if training else "valid_loss"
        loss = batches[-1].get(key) if batches else None
        if loss is not None and not math.isfinite(loss):
            number = sum(key in b for b in batches)  # the epoch's training or validation batch
            where = f"at epoch {epoch['epoch']}, batch {number}"
            if training:
                self._fail_non_finite(f"diverged: the training loss became {loss} {where}")
            self._fail_non_finite(
                f"stopped: the validation loss became {loss} {where}",
                hint="Check the validation data for NaN or infinite values. If they are "
                "finite, the network diverged: try",
            )

    def _check_finite_weights(self):
        for name in self._modules:
            module = getattr(self, name + "_", None)
            if module is None:
                continue
            params = [p for p in module.parameters() if p.is_floating_point()]
            if params and not all(bool(torch.isfinite(p).all()) for p in params):
                self._fail_non_finite(
                    f"diverged: the weights of {name!r} became non-finite by the end of epoch "
                    f"{len(self.history)}"
                )

    def _fail_non_finite(self, what, hint="Try"):
        # leave the net unfitted: predict raises NotFittedError instead of returning NaN
        self.initialized_ = False
        raise NonFiniteLossError(
            f"Training of {type(self).__name__} {what}. {hint} a smaller learning "
            f"rate (lr={self.lr!r} now), standardized inputs or smaller penalty weights."
        )

    def save(self, path):
        """Save the fitted estimator to ``path`` in the safe sk_softreg format.

        The file holds the weights (safetensors) and a JSON config with the
        parameters and fitted attributes; :func:`sk_softreg.load` reads it back
        without unpickling anything. Callbacks, the optimizer state and other
        parameters that JSON cannot hold are not saved (a warning lists them).

        Parameters
        ----------
        path : str or os.PathLike
            The file to write.

        Returns
        -------
        self
        """
        from ._persistence import save

        save(self, path)
        return self

    def initialize_module(self):
        """Build ``module_``, passing the shape arguments inferred from the data.

        For the default module, and for a user module class whose constructor
        takes them, the inferred arguments (see ``_inferred_module_kwargs``) are
        passed unless the user set them through ``module__*``.
        """
        kwargs = self.get_params_for("module")
        module = self.module if self.module is not None else self._default_module
        if isinstance(module, type) or (callable(module) and not isinstance(module, torch.nn.Module)):
            accepted = _accepted_kwargs(module)
            for key, value in self._inferred_module_kwargs().items():
                if key in accepted:
                    kwargs.setdefault(key, value)
        self.module_ = self.initialized_instance(module, kwargs)
        return self

    def initialize_optimizer(self, *args, **kwargs):
        """skorch's, after choosing the memory format of the default module's weights.

        On the CPU, with a ``torch.optim`` optimizer other than ``LBFGS``, the
        default module's 4-D (convolution) weights are stored ``channels_last``:
        oneDNN's convolutions are faster in that layout, and the default module
        flattens with ``nn.Flatten``, which accepts it. ``LBFGS`` (and code that
        calls ``.view(-1)`` on parameters or gradients) needs the default layout;
        a user module, including ``module=SoftRegCNN`` passed explicitly, keeps
        the layout it was built with.
        """
        if self.module is None and isinstance(self.module_, torch.nn.Module):
            channels_last = _on_cpu(self.device) and _layout_agnostic(self.optimizer)
            self.module_.to(
                memory_format=torch.channels_last if channels_last else torch.contiguous_format
            )
        return super().initialize_optimizer(*args, **kwargs)

    def get_default_callbacks(self):
        """skorch's defaults; with ``verbose >= 1`` a tqdm bar on stderr replaces the
        epoch table (``verbose >= 2`` keeps the table too)."""
        callbacks = list(super().get_default_callbacks())
        if self.verbose >= 1:
            if self.verbose < 2:
                callbacks = [(name, cb) for name, cb in callbacks if name != "print_log"]
            callbacks.append(("progress", EpochProgressBar()))
        return callbacks

    def get_params_for(self, prefix):
        params = super().get_params_for(prefix)
        if prefix == "iterator_train":
            params.setdefault("shuffle", True)
        elif prefix == "optimizer" and self._fused_by_default(params):
            params["fused"] = True
        return params

    def _fused_by_default(self, optimizer_kwargs):
        """Whether to build the optimizer with ``fused=True`` (one kernel per step).

        Only for Adam and AdamW (exactly these classes) on a device where torch
        has their fused kernels, and only when the user chose none of
        ``optimizer__fused``, ``__foreach`` or ``__differentiable``: their
        choice wins. Elsewhere torch's own default applies (foreach on CUDA).
        """
        if self.optimizer not in _FUSED_OPTIMIZERS:
            return False
        if not _FUSED_OFF_KEYS.isdisjoint(optimizer_kwargs):
            return False
        device = torch.device(self.device) if self.device is not None else torch.device("cpu")
        return device.type in _FUSED_DEVICE_TYPES

    def _set_training(self, training=True):
        """Put the modules and criteria in train or eval mode, skipping those already there.

        skorch calls this before every batch; ``module.train(mode)`` walks the
        module tree and sets every flag through ``nn.Module.__setattr__``,
        which costs as much as a small layer. It is skipped only when every
        submodule already has ``training == mode`` and none overrides
        ``train`` (an override may do more than set the flags), so the modes
        after this call are exactly those skorch would set.
        """
        for name in self._modules + self._criteria:
            module = getattr(self, name + "_")
            if isinstance(module, torch.nn.Module) and not _in_mode(module, training):
                module.train(training)

    # ------------------------------------------------------------------
    # fast path for in-memory arrays
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
        if training:
            kwargs = self.get_params_for("iterator_train")
            iterator = self.iterator_train
        else:
            kwargs = self.get_params_for("iterator_valid")
            iterator = self.iterator_valid
        batch_size = kwargs.get("batch_size", self.batch_size)
        if batch_size == -1:
            batch_size = len(dataset)
        source = None
        if (
            self._use_fast_path
            and iterator is torch.utils.data.DataLoader
            and set(kwargs) <= FAST_ITERATOR_OPTIONS
            and isinstance(batch_size, numbers.Integral)
            and batch_size > 0
        ):
            source = fast_batches_source(dataset)
        if source is None:
            return super().get_iterator(dataset, training=training)
        cache = getattr(self, "_batches_cache", None)
        cached = cache.get(id(dataset)) if cache is not None else None
        if cached is not None and cached[0] is dataset:
            tensors = cached[1]
        else:
            tensors = prepare_tensors(*source, device=self.device)
            if cache is not None:
                cache[id(dataset)] = (dataset, tensors)
        return TensorBatches(
            *tensors,
            batch_size=batch_size,
            shuffle=kwargs.get("shuffle", False),
            drop_last=kwargs.get("drop_last", False),
        )

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        # tensors prepared by get_iterator, reused while this fit runs
        # (e.g. by a scoring callback that predicts on the validation set)
        self._batches_cache = {}
        self._penalized_cache = ()

    def on_train_end(self, net, X=None, y=None, **kwargs):
        self._batches_cache = None
        self._penalized_cache = None
        super().on_train_end(net, X=X, y=y, **kwargs)

    # ------------------------------------------------------------------
    # the objective
    def _penalized_params(self):
        # Cached while a fit runs (get_loss and train_step ask once per batch):
        # filled lazily, so after callbacks such as Freezer ran on_train_begin.
        cache = getattr(self, "_penalized_cache", None)
        if cache and cache[0] is self.module_:
            return cache[1]
        params = select_penalized(self.module_, self.penalize)
        if cache is not None:  # None outside a fit
            self._penalized_cache = (self.module_, params)
        return params

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Data loss, plus the weighted penalty terms when ``training``.

        Returns ``data + λ1·Σ|w| + λ2·Σw² + α·mean KL`` for training batches and
        the plain data loss otherwise, so ``valid_loss`` stays comparable across
        λ and α. Under ``l1_method="proximal"`` the L1 term is reported but carries
        no gradient: the proximal step in ``train_step`` applies it. Called from
        ``train_step_single``, the λ2 term is likewise a plain number: its
        gradient ``2·λ2·w`` is added to the weights' gradients right after
        ``backward`` (the same gradient, without a backward pass through the
        norm).
        """
        data = self._data_loss(y_pred, y_true, X=X, training=training)
        if not training or not (self.lambda1 or self.lambda2 or self.alpha):
            return data
        zero = data.new_zeros(())
        l1 = l2 = zero
        params = self._penalized_params() if (self.lambda1 or self.lambda2) else []
        if self.lambda1:
            with _no_grad_if(self.l1_method == "proximal"):
                l1 = self.lambda1 * l1_penalty(params)
        state = getattr(self, "_step_state", None)
        if self.lambda2:
            with _no_grad_if(state is not None and state.l2_grad_pending):
                l2 = self.lambda2 * l2_penalty(params)
        kl = self.alpha * self._kl_term(y_pred, y_true).mean() if self.alpha else zero
        loss = data + l1 + l2 + kl
        if state is not None and state.evaluations is not None:
            # inside train_step: keep this evaluation's terms for history
            state.evaluations.append((loss, torch.stack([l1, l2, kl]).detach(), len(y_pred)))
        return loss

    def _data_loss(self, y_pred, y_true, X=None, training=False):
        return super().get_loss(y_pred, y_true, X=X, training=training)

    def train_step_single(self, batch, **fit_params):
        """skorch's forward, loss and backward, then the λ2 gradient ``2·λ2·w``.

        Adding ``2·λ2·w`` to the gradients in one foreach kernel is cheaper
        than backpropagating through ``λ2·Σw²`` and gives the same gradient to
        every optimizer (unlike ``weight_decay``, which AdamW decouples).
        Callbacks' ``on_grad_computed`` (e.g. gradient clipping) see the full
        gradient, as before.
        """
        if not self.lambda2:
            return super().train_step_single(batch, **fit_params)
        state = self._step_scratch()
        state.l2_grad_pending = True
        try:
            step = super().train_step_single(batch, **fit_params)
        finally:
            state.l2_grad_pending = False
        add_l2_grad_(self._penalized_params(), self.lambda2)
        return step

    def train_step(self, batch, **fit_params):
        """One optimizer step, then the proximal L1 step on the penalized weights.

        The penalty terms recorded in history are those of the loss evaluation
        that skorch records as ``train_loss`` (the first one by default; LBFGS
        evaluates the loss several times per step).
        """
        if not (self.lambda1 or self.lambda2 or self.alpha):
            return super().train_step(batch, **fit_params)
        state = self._step_scratch()
        state.evaluations = evaluations = []
        try:
            step = super().train_step(batch, **fit_params)
        finally:
            state.evaluations = None
        if evaluations:
            chosen = next((e for e in evaluations if e[0] is step["loss"]), evaluations[0])
            self._accumulate_terms(chosen[1], chosen[2])
        self._proximal_step()
        return step

    def _step_scratch(self):
        state = getattr(self, "_step_state", None)
        if state is None:
            state = self._step_state = _StepState()
        return state

    def _proximal_step(self):
        """Soft-threshold the penalized weights; called right after the optimizer step."""
        if self.lambda1 and self.l1_method == "proximal":
            params = self._penalized_params()
            prox_l1_(params, prox_thresholds(self.optimizer_, params, self.lambda1))

    # ------------------------------------------------------------------
    # history: penalty terms summed on the device, read once per epoch
    def _accumulate_terms(self, terms, n):
        if getattr(self, "_epoch_terms", None) is None:
            self._epoch_terms = [terms * n, n]
        else:
            self._epoch_terms[0] += terms * n
            self._epoch_terms[1] += n

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        super().on_epoch_begin(net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs)
        self._epoch_terms = None

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        terms = getattr(self, "_epoch_terms", None)
        # no terms were accumulated when no penalty is active: they are all 0
        values = (terms[0] / terms[1]).tolist() if terms is not None else [0.0] * 3
        for name, value in zip(_HISTORY_TERMS, values):
            self.history.record(name, value)
        self._epoch_terms = None
        super().on_epoch_end(net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs)


class _StepState:
    """Scratch space of the training step, kept on the net during a fit.

    Setting attributes on this plain object costs far less than on the net,
    whose ``__setattr__`` inspects every value for torch components.
    """

    __slots__ = ("l2_grad_pending", "evaluations")

    def __init__(self):
        self.l2_grad_pending = False  # get_loss leaves λ2 out of the graph
        self.evaluations = None  # [(loss, terms, n)] of the current train_step


def _on_cpu(device):
    return device is None or torch.device(device).type == "cpu"


def _layout_agnostic(optimizer):
    """True for torch's own optimizers, which work on any memory layout (not LBFGS)."""
    return (
        isinstance(optimizer, type)
        and optimizer.__module__.startswith("torch.optim.")
        and optimizer is not torch.optim.LBFGS
    )


def _no_grad_if(condition):
    return torch.no_grad() if condition else nullcontext()


def _in_mode(module, training):
    """True if ``module.train(training)`` would change nothing: all flags set, no override."""
    pending = [module]
    for m in pending:  # grows while iterating: the whole tree, without building names
        if m is None:  # a submodule slot registered as None
            continue
        if m.training != training or type(m).train is not torch.nn.Module.train:
            return False
        pending.extend(m._modules.values())
    return True


def _accepted_kwargs(factory):
    """Names of keyword arguments a module class or factory accepts."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return set()
    return set(signature.parameters)



def _drop_lr_schedulers(state):
    """Pickle callbacks without the torch LR scheduler they hold.

    skorch 1.4's ``LRScheduler`` keeps ``lr_scheduler_``, and through it the
    optimizer with its (possibly CUDA) tensors, outside the registered
    attributes, so plain pickle serializes them and a CUDA-trained net no longer
    loads without CUDA (skorch issue #1096). ``on_train_begin`` rebuilds the
    scheduler from history, so the pickled copies drop it; the live callbacks
    are left untouched.
    """
    copies = {}

    def without_scheduler(cb):
        if getattr(cb, "lr_scheduler_", None) is None:
            return cb
        if id(cb) not in copies:
            copies[id(cb)] = copy.copy(cb)
            copies[id(cb)].lr_scheduler_ = None
        return copies[id(cb)]

    def fix(item):
        if isinstance(item, tuple) and len(item) == 2:
            return (item[0], without_scheduler(item[1]))
        return without_scheduler(item)

    for key in ("callbacks", "callbacks_"):
        if isinstance(state.get(key), list):
            state[key] = [fix(item) for item in state[key]]
