"""The soft-regularization mixin shared by both estimators.

It sits in front of a ``skorch.NeuralNet`` subclass in the MRO and changes only
skorch's extension points:

- ``get_loss`` adds the penalty terms to the *training* loss only;
- ``train_step`` applies the proximal L1 and group-L1 steps after ``optimizer.step()``;
- ``initialize_module`` passes the shape arguments inferred from the data;
- ``on_epoch_begin`` / ``on_epoch_end`` record the penalty terms in history;
- ``fit`` / ``partial_fit`` validate parameters, data and ``sample_weight``
  and seed torch;
- ``get_iterator`` slices in-memory tensors instead of using a DataLoader
  when it can (see :mod:`sk_softreg._batching`);
- ``get_default_callbacks`` / ``get_split_datasets`` add skorch's
  ``EarlyStopping`` and a ``ValidSplit`` when ``early_stopping=True``;
- ``infer`` / ``get_loss`` keep sample weights away from the module and
  weight the data loss and the KL term with them;
- ``notify``, ``run_single_epoch``, ``initialize_history`` and
  ``_zero_grad_optimizer`` keep skorch's per-batch hooks and history at less
  cost per batch, and ``train_step`` steps a sole torch optimizer after the
  closure's work rather than through the closure (see
  :mod:`sk_softreg._batch_loop`).
"""

import copy
import inspect
import math
import numbers
import warnings
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from sklearn.base import is_classifier
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_parameter_constraints,
)
from sklearn.utils.validation import _check_sample_weight, check_consistent_length
from skorch import NeuralNet
from skorch import callbacks as _callbacks
from skorch.callbacks import EarlyStopping
from skorch.dataset import ValidSplit
from skorch.helper import SliceDataset
from skorch.utils import TeeGenerator, is_dataset, to_tensor

from ._batch_loop import (
    BATCH_HOOKS,
    BatchHistory,
    batch_length,
    closure_free,
    hook_calls,
    only_known,
    set_grads_to_none,
)
from ._batching import (
    FAST_ITERATOR_OPTIONS,
    TensorBatches,
    block_batches,
    fast_batches_source,
    pack_weights,
    prepare_tensors,
    unpack_weights,
)
from ._exceptions import NonFiniteLossError
from ._flat import flatten_
from ._progress import EpochProgressBar
from ._weight_decay import DECAY_OPTIMIZERS, decay_groups, split_groups, step_with_added_decay
from .penalties import (
    add_l2_grad_,
    group_l2_penalty,
    input_layer,
    l1_penalty,
    l2_penalty,
    prox_group_l2_,
    prox_l1_,
    prox_thresholds,
    select_penalized,
    weighted_mean,
)

_NON_NEGATIVE = Interval(numbers.Real, 0, None, closed="left")
_HISTORY_TERMS = ("train_l1", "train_l2", "train_kl", "train_features")
# fused Adam/AdamW kernels exist on these devices in every supported torch (>= 2.4)
_FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)
_FUSED_DEVICE_TYPES = frozenset({"cpu", "cuda"})
_FUSED_OFF_KEYS = frozenset({"fused", "foreach", "differentiable"})
#: devices where the penalized weights live in one flat buffer during a fit
#: (sk_softreg._flat); measured on the CPU only
_FLAT_DEVICE_TYPES = frozenset({"cpu"})


def resolve_device(device):
    """Map ``"auto"`` to ``"cuda"`` when CUDA is available, else ``"cpu"``."""
    if isinstance(device, str) and device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class SoftRegMixin:
    """λ1 / λ2 / α soft regularization on top of a ``skorch.NeuralNet``.

    Subclasses provide ``_default_module``, ``_validate_fit_data``,
    ``_inferred_module_kwargs``, ``_kl_term``, ``_example_input`` and
    ``_onnx_graph`` (and may override ``_data_loss``).
    """

    _parameter_constraints = {
        "lambda1": [_NON_NEGATIVE],
        "lambda2": [_NON_NEGATIVE],
        "lambda_features": [_NON_NEGATIVE],
        "alpha": [_NON_NEGATIVE],
        "penalize": [StrOptions({"weights", "all"}), callable],
        "l1_method": [StrOptions({"proximal", "subgradient"})],
        "random_state": ["random_state"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [_NON_NEGATIVE],
    }
    _finite_params = ("lambda1", "lambda2", "lambda_features", "alpha", "tol")
    # subclasses whose engine needs real DataLoaders (Accelerate) switch off
    # the tensor-slicing fast path of ``get_iterator``
    _use_fast_path = True
    # keep the penalized weights in one flat buffer during a fit (sk_softreg._flat);
    # subclasses whose engine wraps the module or the optimizer (Accelerate) switch it off
    _flatten_penalized = True

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
        state.pop("_feature_cache", None)
        state.pop("_step_state", None)
        state.pop("_hooked_callbacks", None)
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
    def fit(self, X, y=None, sample_weight=None, **fit_params):
        """Validate the data, initialize the network (unless ``warm_start``) and train.

        Parameters
        ----------
        X : array-like
            Training data; see the class docstring for the accepted shapes.
        y : array-like
            Targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample (times its ``class_weight``
            for the classifier). Each batch's data loss and KL term become
            weighted means, ``sum(w_i * l_i) / sum(w_i)`` over the batch, as
            in scikit-learn's MLP; the λ penalties do not change, and the
            validation loss is weighted the same way. Rows of weight 0 are
            dropped before training, so the fit equals one without them;
            constant weights give exactly the unweighted fit. The weights
            never reach the module's ``forward``. Not supported for a torch
            ``Dataset`` X.
        **fit_params : dict
            Passed on to the module's ``forward`` and to ``train_split``.

        Returns
        -------
        self
        """
        self._validate_hyperparameters()
        reset = not (self.warm_start and self.initialized_)
        X, y, sample_weight = self._weighted_rows(X, y, sample_weight)
        X, y = self._validate_fit_data(X, y, reset=reset, sample_weight=sample_weight)
        with self._seeded():
            if reset:
                self.initialize()
            super().partial_fit(self._with_weights(X, sample_weight), y, **fit_params)
        self._after_fit(X, y, sample_weight)
        return self

    def partial_fit(self, X, y=None, classes=None, sample_weight=None, **fit_params):
        """Train for ``max_epochs`` more epochs, initializing only on the first call.

        Parameters
        ----------
        X : array-like
        y : array-like
        classes : array-like, default=None
            Classifier only: all class labels, for a first call that may not see
            every class.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample, as in ``fit``.
        **fit_params : dict

        Returns
        -------
        self
        """
        self._validate_hyperparameters()
        if self.early_stopping and not isinstance(self.early_stopping, str):
            raise ValueError(
                "partial_fit does not support early_stopping=True; use fit, or "
                "set_params(early_stopping=False) before calling partial_fit."
            )
        reset = not self.initialized_
        X, y, sample_weight = self._weighted_rows(X, y, sample_weight, classes=classes, partial=True)
        X, y = self._validate_fit_data(
            X, y, reset=reset, classes=classes, sample_weight=sample_weight
        )
        self._incremental = True  # early_stopping="auto" is off in partial_fit, as in sklearn
        try:
            if reset:
                self.initialize()
            super().partial_fit(self._with_weights(X, sample_weight), y, **fit_params)
        finally:
            self._incremental = False
        self._after_fit(X, y, sample_weight)
        return self

    # ------------------------------------------------------------------
    # sample weights
    def _weighted_rows(self, X, y, sample_weight, classes=None, partial=False):
        """Return ``(X, y, weights)``: the rows to train on and their weights.

        ``weights`` is ``sample_weight`` (validated) times the class weights
        of the classifier's ``class_weight``. Rows of weight 0 are dropped, so
        they cannot influence training and the fit equals a fit without them.
        The remaining weights are divided by their maximum, which changes no
        weighted mean but keeps them representable in float32. Constant
        weights give the unweighted fit exactly, so they come back as None.
        """
        weights = self._sample_weights(X, y, sample_weight, classes=classes, partial=partial)
        if weights is None:
            return X, y, None
        keep = weights > 0
        if not keep.all():
            X, y, weights = _safe_indexing(X, keep), _safe_indexing(y, keep), weights[keep]
        weights = weights / weights.max()
        if np.all(weights == 1.0):
            return X, y, None
        return X, y, weights

    def _sample_weights(self, X, y, sample_weight, classes=None, partial=False):
        """Validated ``sample_weight`` as float64, or None; subclasses add class weights."""
        if sample_weight is None:
            return None
        if is_dataset(X) or is_dataset(y):
            raise ValueError(
                f"{type(self).__name__} supports sample_weight only for in-memory X and y "
                "(arrays, lists, DataFrames), not for a torch Dataset."
            )
        check_consistent_length(X, y)
        return _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)

    @staticmethod
    def _with_weights(X, sample_weight):
        """``X`` as skorch gets it: packed with float32 weights when there are any."""
        if sample_weight is None:
            return X
        return pack_weights(X, sample_weight.astype(np.float32))

    def infer(self, x, **fit_params):
        """skorch's ``infer``, giving the module only the data of a weighted batch.

        A plain tensor goes straight to ``module_(x.to(device))``, which is
        what skorch's ``to_tensor`` and ``infer`` do with it.
        """
        x, _ = unpack_weights(x)
        if type(x) is not torch.Tensor:
            return super().infer(x, **fit_params)
        return self.module_(self._on_device(x), **fit_params)

    def _on_device(self, x):
        """skorch's ``to_tensor(x, device=self.device)``; a plain tensor takes the short way,
        ``x.to(device)``, which is what ``to_tensor`` does with it."""
        device = self.device
        if type(x) is not torch.Tensor:
            return to_tensor(x, device=device)
        if device is None or (device == "cpu" and x.is_cpu):
            return x  # what x.to("cpu") returns for a CPU tensor, without parsing "cpu"
        return x.to(device)

    # ------------------------------------------------------------------
    # early stopping
    def get_split_datasets(self, X, y=None, **fit_params):
        """skorch's split; with ``early_stopping`` and no ``train_split``, hold out
        ``validation_fraction`` of the data (stratified for a classifier)."""
        if not (self._early_stopping_active() and self.train_split is None):
            return super().get_split_datasets(X, y, **fit_params)
        random_state = self.random_state
        if random_state is not None and not isinstance(random_state, numbers.Integral):
            random_state = check_random_state(random_state)
        split = ValidSplit(
            float(self.validation_fraction),
            stratified=is_classifier(self) and y is not None,
            random_state=random_state,
        )
        dataset_train, dataset_valid = split(self.get_dataset(X, y), y, **fit_params)
        if len(dataset_valid) < 2:
            raise ValueError(
                f"The validation set is too small ({len(dataset_valid)} sample(s)). Increase "
                "'validation_fraction' or the size of your dataset."
            )
        return dataset_train, dataset_valid

    def _early_stopping_active(self):
        """Whether this fit holds out ``validation_fraction`` and stops early.

        ``early_stopping`` as a bool; the regressor also resolves ``"auto"``.
        """
        return bool(self.early_stopping)

    def _early_stopping_callback(self):
        return _SwitchedEarlyStopping(
            monitor="valid_loss",
            patience=self.n_iter_no_change,
            threshold=self.tol,
            threshold_mode="abs",
            lower_is_better=True,
            load_best=True,
        )

    def _torch_device(self):
        """The resolved ``device`` as a ``torch.device`` (the CPU for ``device=None``)."""
        return torch.device(self.device) if self.device is not None else torch.device("cpu")

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
        device = self._torch_device()
        cuda_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            yield

    @contextmanager
    def _large_eval_batches(self, rows=4096):
        """Within: evaluation batches of the in-memory fast path hold up to ``rows`` rows
        (and at most :data:`~sk_softreg._batching.BLOCK_BYTES` of data), never fewer
        than ``batch_size``, unless ``iterator_valid__batch_size`` is set.

        For the statistics that ``fit`` computes on the training rows at the
        end (no gradients are kept, so the batch size only trades a little
        memory for far fewer module calls).
        """
        state = self._step_scratch()
        state.eval_rows = rows
        try:
            yield
        finally:
            state.eval_rows = 0

    def _after_fit(self, X, y, sample_weight=None):
        self._check_finite_weights()
        params = self._penalized_params()
        total = sum(p.numel() for p in params)
        zeros = sum(int((p == 0).sum()) for p in params)
        self.sparsity_ = zeros / total if total else 0.0
        self._set_feature_importances()
        self.n_iter_ = len(self.history)
        stopper = dict(self.callbacks_).get("early_stopping")
        self.best_epoch_ = (stopper.best_epoch_ if stopper is not None else 0) or self.n_iter_

    # ------------------------------------------------------------------
    # the inputs' weights: group L1 (lambda_features) and feature_importances_
    def _input_linear(self):
        """The network's input layer if it is an ``nn.Linear`` taking every input feature.

        Returns ``(layer, None)``, or ``(None, reason)`` when the first layer
        with parameters (in forward order, see
        :func:`~sk_softreg.penalties.input_layer`) is something else.
        """
        module = self.module_
        if not any(
            isinstance(m, torch.nn.Linear) and m.in_features == self.n_features_in_
            for m in module.modules()
        ):  # no candidate: skip the forward pass
            n = self.n_features_in_
            return None, f"{type(module).__name__} has no nn.Linear taking {n} inputs"
        param = next(module.parameters(), None)
        example = self._example_input(2)
        if param is not None:
            example = example.to(param.device)
        name, layer = input_layer(module, example)
        if isinstance(layer, torch.nn.Linear) and layer.in_features == self.n_features_in_:
            return layer, None
        if layer is None:
            found = "calls no layer with parameters"
        else:
            found = f"starts with {type(layer).__name__} ({name or 'the module itself'!r})"
            if isinstance(layer, torch.nn.Linear):
                found += f" taking {layer.in_features} inputs"
        return None, f"{type(module).__name__} {found}"

    def _feature_weight(self):
        """The input layer's weight, shape (hidden, n_features_in_); cached while a fit runs."""
        cache = getattr(self, "_feature_cache", None)
        if cache is not None and cache[0] is self.module_:
            return cache[1]
        layer, reason = self._input_linear()
        if layer is None:
            raise ValueError(
                f"lambda_features={self.lambda_features!r} needs a module whose first layer with "
                f"parameters is an nn.Linear taking the {self.n_features_in_} input features "
                f"(possibly after nn.Flatten), but {reason}. Use lambda_features=0 with "
                "convolutional or other input layers."
            )
        self._feature_cache = (self.module_, layer.weight)
        return layer.weight

    def _set_feature_importances(self):
        for name in ("feature_importances_", "n_features_selected_"):
            self.__dict__.pop(name, None)
        layer, _ = self._input_linear()
        if layer is None:
            return
        norms = torch.linalg.vector_norm(layer.weight.detach(), dim=0).cpu().double().numpy()
        total = norms.sum()
        self.feature_importances_ = norms / total if total > 0 else norms
        self.n_features_selected_ = int(np.count_nonzero(norms))
        if self.n_features_selected_ == 0:
            warnings.warn(
                f"lambda_features={self.lambda_features!r} set the weights of every input to "
                "zero: the network ignores its inputs. Use a smaller lambda_features.",
                UserWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------
    # training faults: skorch already reads every batch loss to the host
    # (``loss.item()`` in ``run_single_epoch``) and records it in history, so
    # checking the recorded float adds no device sync.
    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        super().on_batch_end(net, batch=batch, training=training, **kwargs)
        epoch = list.__getitem__(self.history, -1)  # history[-1], without copying the list
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

    def export_onnx(self, path):
        """Write the fitted network to ``path`` as an ONNX model, for inference without torch.

        The graph has one input ``"X"`` with a dynamic batch axis (the
        classifier's images ``(batch, C, H, W)``, the regressor's rows
        ``(batch, n_features)``, float32) and computes what ``predict_proba``
        (classifier: ``"probabilities"``, softmax inside the graph, columns
        ordered as ``classes_``) or ``predict(X, return_std=True)`` (regressor:
        ``"mean"`` and ``"std"`` in y's units) return. Needs the optional extra
        ``pip install "sk-softreg[onnx]"``; see the ONNX page of the docs.

        Parameters
        ----------
        path : str or os.PathLike
            The ``.onnx`` file to write (weights included).

        Returns
        -------
        self
        """
        from ._onnx import export_onnx

        export_onnx(self, path)
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
            channels_last = (
                self._torch_device().type == "cpu" and _layout_agnostic(self.optimizer)
            )
            self.module_.to(
                memory_format=torch.channels_last if channels_last else torch.contiguous_format
            )
        return super().initialize_optimizer(*args, **kwargs)

    def get_params_for_optimizer(self, prefix, named_parameters):
        """skorch's; with ``lambda2 > 0``, SGD and Adam get the penalized weights
        in parameter groups of their own.

        Each group skorch builds (one, or those of ``optimizer__param_groups``) is
        split into its penalized weights and its other parameters, with the same
        options, so that the optimizer's ``weight_decay`` can carry λ2's gradient
        (see :meth:`_l2_decay_groups`). Training is the same as with the groups
        unsplit.
        """
        args, kwargs = super().get_params_for_optimizer(prefix, named_parameters)
        if prefix == "optimizer" and self.lambda2 and self.optimizer in DECAY_OPTIMIZERS:
            penalized = select_penalized(self.module_, self.penalize)
            args = (split_groups(args[0], penalized), *args[1:])
        return args, kwargs

    def get_default_callbacks(self):
        """skorch's defaults; with ``verbose >= 1`` a tqdm bar on stderr replaces the
        epoch table (``verbose >= 2`` keeps the table too)."""
        callbacks = list(super().get_default_callbacks())
        if self.verbose >= 1:
            if self.verbose < 2:
                callbacks = [(name, cb) for name, cb in callbacks if name != "print_log"]
            callbacks.append(("progress", EpochProgressBar()))
        if self.early_stopping:
            callbacks.append(("early_stopping", self._early_stopping_callback()))
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
        return self._torch_device().type in _FUSED_DEVICE_TYPES

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
    # per-batch bookkeeping (see :mod:`sk_softreg._batch_loop`)
    def initialize_history(self):
        """skorch's, with a :class:`~sk_softreg._batch_loop.BatchHistory`."""
        if isinstance(self.history_, BatchHistory):
            self.history_.clear()
        else:
            self.history_ = BatchHistory()
        return self

    def notify(self, method_name, **cb_kwargs):
        """skorch's ``notify``; during a fit, per-batch hooks skip empty methods.

        The net's own method runs first, then the callbacks' in order, as in
        skorch. For ``on_batch_begin``, ``on_batch_end`` and
        ``on_grad_computed``, methods that are skorch's empty ones
        (``Callback``'s, ``NeuralNet``'s) are left out; the calls are listed
        once per fit, at ``on_train_begin``
        (:func:`~sk_softreg._batch_loop.hook_calls`).
        """
        hooked = getattr(self, "_hooked_callbacks", None)
        if hooked is None or method_name not in hooked:
            return super().notify(method_name, **cb_kwargs)
        for method in hooked[method_name]:
            method(self, **cb_kwargs)

    def _batch_hooks(self, hook):
        """The methods ``notify(hook, ...)`` calls: those listed at ``on_train_begin``
        during a fit, else listed now (:func:`~sk_softreg._batch_loop.hook_calls`)."""
        hooked = getattr(self, "_hooked_callbacks", None)
        return hooked[hook] if hooked else hook_calls(self, hook)

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        """skorch's loop over one epoch's batches, with the same hooks and history.

        Per batch: ``on_batch_begin``, ``step_fn``, the loss and the batch size
        recorded in history, ``on_batch_end``; then the batch count. A tensor
        batch's size is read with ``len`` instead of skorch's ``get_len``
        (:func:`~sk_softreg._batch_loop.batch_length`).
        """
        if iterator is None:
            return
        loss_key, size_key = prefix + "_loss", prefix + "_batch_size"
        # notify's calls, looked up once per epoch instead of per batch
        begin, end = self._batch_hooks("on_batch_begin"), self._batch_hooks("on_batch_end")
        batch_count = 0
        for batch in iterator:
            for method in begin:
                method(self, batch=batch, training=training)
            step = step_fn(batch, **fit_params)
            history = self.history
            history.record_batch(loss_key, step["loss"].item())
            Xi = batch[0] if isinstance(batch, (tuple, list)) else batch
            history.record_batch(size_key, batch_length(Xi))
            for method in end:
                method(self, batch=batch, training=training, **step)
            batch_count += 1
        self.history.record(prefix + "_batch_count", batch_count)

    def _zero_grad_optimizer(self, set_to_none=None):
        """skorch's; torch optimizers' gradients are set to None directly
        (:func:`~sk_softreg._batch_loop.set_grads_to_none`), as their
        ``zero_grad()`` does by default."""
        for name in self._optimizers:
            optimizer = getattr(self, name + "_")
            if set_to_none is not None:
                optimizer.zero_grad(set_to_none=set_to_none)
            elif not set_grads_to_none(optimizer):
                optimizer.zero_grad()

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
        state = getattr(self, "_step_state", None)
        if state is not None and state.eval_rows and not training and "batch_size" not in kwargs:
            # _large_eval_batches: up to eval_rows rows, within BLOCK_BYTES of data
            rows = min(state.eval_rows, block_batches(1, tensors))
            batch_size = max(batch_size, rows)
        X, y, sample_weight = tensors
        return TensorBatches(
            X,
            y,
            batch_size=batch_size,
            shuffle=kwargs.get("shuffle", False),
            drop_last=kwargs.get("drop_last", False),
            sample_weight=sample_weight,
        )

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        # tensors prepared by get_iterator, reused while this fit runs
        # (e.g. by a scoring callback that predicts on the validation set)
        self._batches_cache = {}
        self._penalized_cache = ()
        self._hooked_callbacks = hooked = {hook: hook_calls(self, hook) for hook in BATCH_HOOKS}
        # between one batch's proximal step and the next batch's loss only these run
        # (epoch ends: see on_epoch_begin)
        self._step_scratch().reuse_values = all(
            only_known(hooked[hook], _WEIGHT_READING_HOOKS)
            for hook in ("on_batch_end", "on_batch_begin")
        )
        if self.lambda_features:
            try:
                self._feature_weight()
            except ValueError:
                self.initialized_ = False  # the net was never trained
                raise

    def on_train_end(self, net, X=None, y=None, **kwargs):
        self._hooked_callbacks = None
        self._batches_cache = None
        self._penalized_cache = None
        self._feature_cache = None
        super().on_train_end(net, X=X, y=y, **kwargs)

    # ------------------------------------------------------------------
    # the objective
    def _penalties_active(self):
        """True if any of λ1, λ2, α and λf is non-zero."""
        return bool(self.lambda1 or self.lambda2 or self.alpha or self.lambda_features)

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

        Returns ``data + λ1·Σ|w| + λ2·Σw² + α·mean KL + λf·Σ_j‖W1[:, j]‖`` for
        training batches and the plain data loss otherwise, so ``valid_loss``
        stays comparable across λ and α. Under ``l1_method="proximal"`` the L1
        term is reported but carries no gradient: the proximal step in
        ``train_step`` applies it. The same holds, always, for the group term.
        Called from ``train_step_single``, the λ2 term is likewise a plain
        number: its gradient ``2·λ2·w`` is added to the weights' gradients right
        after ``backward`` (the same gradient, without a backward pass through
        the norm).

        In a weighted fit (``X`` carries the batch's sample weights) ``data`` and
        the KL mean are weighted means over the batch,
        ``sum(w_i * l_i) / sum(w_i)`` (:func:`~sk_softreg.penalties.weighted_mean`),
        in validation too; the λ terms do not change.
        """
        X, weights = unpack_weights(X)
        if not training or not self._penalties_active():
            return self._data_term(y_pred, y_true, X, weights, training)
        l1, l2, features = terms = self._lambda_terms()
        # The λ terms are summed first, mostly outside the graph: Python floats
        # where the compiled loops gave the values. A float sum rides in the
        # value of the one-node data + α·KL where that applies (no node of its
        # own); otherwise it is added to data + α·KL by one node.
        lambdas = [t for t in terms if t is not None]
        penalty = sum(lambdas[1:], lambdas[0]) if lambdas else None
        offset = penalty if isinstance(penalty, float) else 0.0
        kl = None  # the KL mean, once α·KL is in `data`
        if self.alpha and weights is None:
            fused = self._data_loss_with_kl(y_pred, y_true, offset=offset)
            if fused is not None:
                data, kl = fused
                if isinstance(penalty, float):  # already in the node's value
                    penalty = None
        if kl is None:
            data = self._data_term(y_pred, y_true, X, weights, training)
            if self.alpha:  # α scales the KL mean as it enters the loss
                kl_i = self._kl_term(y_pred, y_true)
                kl = kl_i.mean() if weights is None else weighted_mean(kl_i, weights)
                data = torch.add(data, kl, alpha=self.alpha)
        loss = data if penalty is None else data + penalty
        state = getattr(self, "_step_state", None)
        if state is not None and state.evaluations is not None:
            # inside train_step: keep this evaluation's terms for history
            state.evaluations.append((loss, (l1, l2, kl, features), len(y_pred)))
        return loss

    def _data_term(self, y_pred, y_true, X, weights, training):
        """The data loss: the criterion's, or its weighted mean over the batch."""
        if weights is None:
            return self._data_loss(y_pred, y_true, X=X, training=training)
        return weighted_mean(self._per_sample_data_loss(y_pred, y_true, X, training), weights)

    def _lambda_terms(self):
        """``(λ1·Σ|w|, λ2·Σw², λf·Σ_j‖W1[:, j]‖)`` of a training batch, None where inactive.

        Values without a gradient under the proximal step (L1) and when the λ2
        gradient is added after backward (L2): Python floats where the flat
        buffer's compiled loops give them, 0-d tensors otherwise.
        """
        state = getattr(self, "_step_state", None)
        l1 = l2 = features = None
        params = self._penalized_params() if (self.lambda1 or self.lambda2) else []
        proximal = bool(self.lambda1) and self.l1_method == "proximal"
        pending = bool(self.lambda2) and state is not None and state.l2_grad_pending
        sum_abs = sum_squares = None
        flat = state.flat if state is not None else None
        if (proximal or pending) and flat is not None and flat.params is params and flat.intact():
            sum_abs, sum_squares = flat.penalty_values(
                l1=proximal, l2=pending, reuse=state.reuse_values
            )
        if self.lambda1:
            if sum_abs is None:
                with _no_grad_if(proximal):
                    sum_abs = l1_penalty(params)
            l1 = self.lambda1 * sum_abs
        if self.lambda2:
            if sum_squares is None:
                with _no_grad_if(pending):
                    sum_squares = l2_penalty(params)
            l2 = self.lambda2 * sum_squares
        if self.lambda_features:
            with torch.no_grad():
                features = self.lambda_features * group_l2_penalty(self._feature_weight())
        return l1, l2, features

    def _data_loss(self, y_pred, y_true, X=None, training=False):
        return super().get_loss(y_pred, y_true, X=X, training=training)

    def _data_loss_with_kl(self, y_pred, y_true, offset=0.0):
        """``(data + α·KL mean + offset, KL mean)`` of an unweighted training batch
        in one step, or None to compute them apart (the default). ``offset`` is a
        float without gradient."""
        return None

    def _per_sample_data_loss(self, y_pred, y_true, X, training):
        """``_data_loss`` with the criterion's ``reduction`` set to ``"none"`` meanwhile."""
        criterion = self.criterion_
        reduction = getattr(criterion, "reduction", None)
        if not isinstance(reduction, str):
            raise TypeError(
                f"sample_weight and class_weight need per-sample losses, but the criterion "
                f"{type(criterion).__name__} has no 'reduction' attribute to set to 'none' "
                "(torch.nn losses have one)."
            )
        criterion.reduction = "none"
        try:
            return self._data_loss(y_pred, y_true, X=X, training=training)
        finally:
            criterion.reduction = reduction

    def train_step_single(self, batch, **fit_params):
        """skorch's forward, loss and backward, then the λ2 gradient ``2·λ2·w``.

        Adding ``2·λ2·w`` to the gradients in one foreach kernel is cheaper
        than backpropagating through ``λ2·Σw²`` and gives the same gradient to
        every optimizer (unlike ``weight_decay``, which AdamW decouples).
        Callbacks' ``on_grad_computed`` (e.g. gradient clipping) see the full
        gradient, as before. Where :meth:`_optimizer_step` offers to have the
        optimizer add it (:mod:`sk_softreg._weight_decay`), nothing is added
        here and the offer is taken, unless a penalized weight got no
        gradient. A subclass's ``train_step_single`` that does not call this
        one takes no offer: its step is then the optimizer's plain one.
        """
        if not self.lambda2:
            return super().train_step_single(batch, **fit_params)
        state = self._step_scratch()
        offered, state.l2_decay_offer = state.l2_decay_offer, None
        state.l2_grad_pending = True
        try:
            step = super().train_step_single(batch, **fit_params)
        finally:
            state.l2_grad_pending = False
        params = self._penalized_params()
        if offered is not None and all(p.grad is not None for p in params):
            state.l2_decay_taken = offered
        else:
            add_l2_grad_(params, self.lambda2)
        return step

    def train_step(self, batch, **fit_params):
        """One optimizer step, then the proximal L1 and group-L1 steps.

        The penalty terms recorded in history are those of the loss evaluation
        that skorch records as ``train_loss`` (the first one by default; LBFGS
        evaluates the loss several times per step).
        """
        if not self._penalties_active():
            return self._optimizer_step(batch, **fit_params)
        state = self._step_scratch()
        state.evaluations = evaluations = []
        try:
            step = self._optimizer_step(batch, **fit_params)
        finally:
            state.evaluations = None
        if evaluations:
            chosen = next((e for e in evaluations if e[0] is step["loss"]), evaluations[0])
            self._accumulate_terms(chosen[1], chosen[2])
        self._proximal_step()
        return step

    def _optimizer_step(self, batch, **fit_params):
        """skorch's ``NeuralNet.train_step``, without the closure where it changes nothing.

        skorch hands a closure (zero_grad, ``train_step_single``,
        ``on_grad_computed``) to ``optimizer.step``. A sole ``torch.optim``
        optimizer other than LBFGS calls it once, first, under
        ``torch.enable_grad()``; here the closure's work runs that way and then
        ``optimizer.step()``: the same operations in the same order
        (:func:`~sk_softreg._batch_loop.closure_free`). ``on_grad_computed`` is
        notified when anything implements it. Several optimizers, LBFGS,
        other optimizers, step pre-hooks and an overridden
        ``get_train_step_accumulator`` take skorch's own ``train_step``.

        When nothing implements ``on_grad_computed``, SGD and Adam get the λ2
        gradient through their ``weight_decay`` (see :meth:`_l2_decay_groups`).
        """
        optimizer = None
        if len(self._optimizers) == 1 and (
            type(self).get_train_step_accumulator is NeuralNet.get_train_step_accumulator
        ):
            optimizer = getattr(self, self._optimizers[0] + "_")
        if optimizer is None or not closure_free(optimizer):
            return super().train_step(batch, **fit_params)
        hooked = getattr(self, "_hooked_callbacks", None)
        notify = hooked is None or hooked["on_grad_computed"]
        # offered to train_step_single, which takes it instead of adding 2·λ2·w itself
        offer = self._l2_decay_groups(optimizer) if self.lambda2 and not notify else None
        taken = None
        if offer is not None:
            state = self._step_state
            state.l2_decay_offer = offer
        try:
            with _grad_enabled():
                self._zero_grad_optimizer()
                step = self.train_step_single(batch, **fit_params)
                if notify:
                    self.notify(
                        "on_grad_computed",
                        named_parameters=TeeGenerator(self.get_all_learnable_params()),
                        batch=batch,
                        training=True,
                    )
        finally:
            if offer is not None:
                taken = state.l2_decay_taken
                state.l2_decay_offer = state.l2_decay_taken = None
        if taken is None:
            optimizer.step()
        else:
            step_with_added_decay(optimizer, taken, 2.0 * self.lambda2)
        return step

    def _l2_decay_groups(self, optimizer):
        """The parameter groups whose ``weight_decay`` can carry λ2's gradient, or None.

        The groups that hold exactly the penalized weights
        (:func:`~sk_softreg._weight_decay.decay_groups`; SGD and Adam, whose
        weight decay is the gradient's ``weight_decay·w``), found once per fit
        and optimizer. ``optimizer.step()`` with their ``weight_decay`` raised
        by ``2·λ2`` applies the same gradient as adding ``2·λ2·w`` after
        backward, inside the optimizer's own pass over the weights.
        """
        params = self._penalized_params()
        state = self._step_scratch()
        cached = state.l2_decay_cache
        if cached is None or cached[0] is not optimizer or cached[1] is not params:
            cached = state.l2_decay_cache = (optimizer, params, decay_groups(optimizer, params))
        return cached[2]

    def _step_scratch(self):
        state = getattr(self, "_step_state", None)
        if state is None:
            state = self._step_state = _StepState()
        return state

    def _proximal_step(self):
        """Soft-threshold the penalized weights; called right after the optimizer step.

        The first call of a fit moves the penalized weights into one flat
        buffer where :func:`~sk_softreg._flat.flatten_` applies; the step is
        then one threshold and one clamp over the buffer, with the same result
        per coordinate as tensor by tensor.
        """
        if self.lambda1 and self.l1_method == "proximal":
            flat = self._flat_weights()
            if flat is None or not flat.prox_l1_(self.lambda1):
                params = self._penalized_params()
                prox_l1_(params, prox_thresholds(self.optimizer_, params, self.lambda1))
        if self.lambda_features:
            self._prox_features()

    def _flat_weights(self):
        """The fit's :class:`~sk_softreg._flat.FlatWeights`, built on the first call of a
        fit (after the optimizer's first step), or None where it does not apply.

        Dropped, with every tensor given its own storage back, once the
        parameters, the module or the optimizer no longer match it.
        """
        state = self._step_scratch()
        flat = state.flat
        if flat is None:
            if state.flat_tried:
                return None
            state.flat_tried = True
            if self._flatten_penalized and self._torch_device().type in _FLAT_DEVICE_TYPES:
                state.flat = flat = flatten_(self._penalized_params(), self.optimizer_)
            return flat
        if flat.params is self._penalized_params() and flat.intact(self.optimizer_):
            return flat
        self._restore_flat()
        return None

    def _restore_flat(self):
        state = getattr(self, "_step_state", None)
        if state is not None and state.flat is not None:
            state.flat.restore_()
            state.flat = None

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        """skorch's ``fit_loop``; the penalized weights get their own storage back at its
        end, also when it raises (see :meth:`_flat_weights`)."""
        self._step_scratch().flat_tried = False
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        finally:
            self._restore_flat()

    def _prox_features(self):
        """Group soft-threshold of the input layer's columns (after the L1 prox: the
        composition is the prox of the sparse group lasso)."""
        weight = self._feature_weight()
        # per-coordinate step sizes: the L1 thresholds for lambda1 = 1
        steps = prox_thresholds(self.optimizer_, [weight], 1.0)[0]
        prox_group_l2_(weight, steps, self.lambda_features)

    # ------------------------------------------------------------------
    # history: penalty terms summed on the device, read once per epoch
    def _accumulate_terms(self, terms, n):
        """Add ``n`` times this evaluation's ``(l1, l2, kl, features)`` to the epoch's
        sums (:class:`_EpochTerms`). The KL term is the unscaled mean and enters
        history scaled by α."""
        totals = getattr(self, "_epoch_terms", None)
        if totals is None:
            totals = self._epoch_terms = _EpochTerms()
        totals.add(terms, (n, n, n * self.alpha, n), n)

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        super().on_epoch_begin(net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs)
        self._epoch_terms = None
        # the epoch's first batch adds up its penalty values afresh: epoch-level
        # callbacks (e.g. a checkpoint loaded) may have written the weights
        state = getattr(self, "_step_state", None)
        if state is not None and state.flat is not None:
            state.flat.forget_values()

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        terms = getattr(self, "_epoch_terms", None)
        # no terms were accumulated when no penalty is active: they are all 0
        means = terms.means() if terms is not None else [0.0] * len(_HISTORY_TERMS)
        for name, mean in zip(_HISTORY_TERMS, means):
            self.history.record(name, mean)
        self._epoch_terms = None
        super().on_epoch_end(net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs)


def _is_dataset(X):
    """True for lazy inputs: a torch ``Dataset`` or a skorch ``SliceDataset``."""
    return isinstance(X, (torch.utils.data.Dataset, SliceDataset))


def _first_sample_shape(X, y, name, ndim, expected):
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


#: per-batch hooks that leave the weights alone: skorch's history row, scorers,
#: learning-rate scheduler, progress bar and loggers, the net's loss check and
#: the epoch progress bar (a method overridden in a subclass is not one of them)
_WEIGHT_READING_HOOKS = frozenset({
    NeuralNet.on_batch_begin,
    SoftRegMixin.on_batch_end,
    EpochProgressBar.on_batch_end,
    *(
        getattr(_callbacks, name).on_batch_end
        for name in (
            "EpochScoring", "BatchScoring", "LRScheduler", "ProgressBar", "TensorBoard",
            "WandbLogger", "NeptuneLogger", "SacredLogger", "MlflowLogger",
        )
    ),
})


class _SwitchedEarlyStopping(EarlyStopping):
    """skorch's ``EarlyStopping``, idle in the fits where the net's early stopping is off
    (``early_stopping="auto"`` on small data or in ``partial_fit``)."""

    def on_epoch_end(self, net, **kwargs):
        if net._early_stopping_active():
            super().on_epoch_end(net, **kwargs)

    def on_train_end(self, net, **kwargs):
        if net._early_stopping_active():
            super().on_train_end(net, **kwargs)


class _StepState:
    """Scratch space of the training step, kept on the net during a fit.

    Setting attributes on this plain object costs far less than on the net,
    whose ``__setattr__`` inspects every value for torch components.
    """

    __slots__ = (
        "l2_grad_pending", "l2_decay_offer", "l2_decay_taken", "l2_decay_cache", "evaluations",
        "eval_rows", "flat", "flat_tried", "reuse_values",
    )

    def __init__(self):
        self.l2_grad_pending = False  # get_loss leaves λ2 out of the graph
        # groups whose weight_decay may carry λ2's gradient this step (see _weight_decay),
        # offered by _optimizer_step, taken by train_step_single instead of adding it
        self.l2_decay_offer = self.l2_decay_taken = None
        self.l2_decay_cache = None  # (optimizer, penalized params, their decay groups or None)
        self.evaluations = None  # [(loss, terms, n)] of the current train_step
        self.eval_rows = 0  # least rows per evaluation batch (see _large_eval_batches)
        self.flat = None  # the fit's FlatWeights (see _flat_weights)
        self.flat_tried = False  # flatten_ was called in this fit
        # the batch hooks of this fit leave the weights alone, so a batch's penalty
        # values may be those its predecessor's proximal step returned (_lambda_terms)
        self.reuse_values = False


class _EpochTerms:
    """The epoch's sums of the history terms (:data:`_HISTORY_TERMS`), row-weighted.

    A term's value is a Python float (the flat buffer's compiled sums, the
    compiled CE + KL) or a 0-d tensor (torch's kernels: a fit's first batch,
    before the flat buffer exists, or where it does not apply). Each term keeps
    a float sum and a tensor sum apart: floats add as floats, at no torch
    operation, even after a tensor came; tensors add in place without a graph,
    so nothing is read off the device per batch. :meth:`means` reads each
    tensor sum once.
    """

    __slots__ = ("floats", "tensors", "rows")

    def __init__(self):
        self.floats = [0.0] * len(_HISTORY_TERMS)
        self.tensors = [None] * len(_HISTORY_TERMS)
        self.rows = 0

    def add(self, values, scales, rows):
        """Add ``scale * value`` for each value that is not None, and ``rows`` to
        :attr:`rows`."""
        self.rows += rows
        floats, tensors = self.floats, self.tensors
        for i, (value, scale) in enumerate(zip(values, scales)):
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                floats[i] += scale * value
                continue
            with torch.no_grad():
                total = tensors[i]
                tensors[i] = torch.mul(value, scale) if total is None else total.add_(value, alpha=scale)

    def means(self):
        """Each term's sum over the epoch divided by :attr:`rows`, as floats."""
        return [
            (f if t is None else f + float(t)) / self.rows
            for f, t in zip(self.floats, self.tensors)
        ]


def _layout_agnostic(optimizer):
    """True for torch's own optimizers, which work on any memory layout (not LBFGS)."""
    return (
        isinstance(optimizer, type)
        and optimizer.__module__.startswith("torch.optim.")
        and optimizer is not torch.optim.LBFGS
    )


def _no_grad_if(condition):
    return torch.no_grad() if condition else nullcontext()


#: reusable and reentrant: a no-op ``with`` block at no allocation
_NO_CHANGE = nullcontext()


def _grad_enabled():
    """``torch.enable_grad()``, or a no-op context where gradients are enabled already
    (a training batch: entering and leaving ``enable_grad`` costs about 1.5 µs)."""
    return _NO_CHANGE if torch.is_grad_enabled() else torch.enable_grad()


#: ``nn.Module.train``, looked up once: ``_in_mode`` compares every submodule's with it
_MODULE_TRAIN = torch.nn.Module.train


def _in_mode(module, training):
    """True if ``module.train(training)`` would change nothing: all flags set, no override."""
    pending = [module]
    for m in pending:  # grows while iterating: the whole tree, without building names
        if m is None:  # a submodule slot registered as None
            continue
        if m.training != training or type(m).train is not _MODULE_TRAIN:
            return False
        if m._modules:  # leaves (most modules) have none to add
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
