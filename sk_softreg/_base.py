"""The soft-regularization mixin shared by both estimators.

:class:`SoftRegMixin` sits in front of a ``skorch.NeuralNet`` subclass in the
MRO and changes skorch's extension points only:

- ``fit`` / ``partial_fit`` check the parameters and the data, and seed torch;
- ``get_loss`` is the objective of the design document: the data loss, plus
  ``α·KL`` and the weight penalties on training batches;
- ``train_step_single`` adds the penalties' gradients after ``backward``, and
  ``train_step`` applies the proximal steps after ``optimizer.step()``;
- ``on_epoch_begin`` / ``on_epoch_end`` record the penalty terms in history;
- ``initialize_module``, ``initialize_optimizer``, ``get_params_for`` and
  ``get_default_callbacks`` set defaults (inferred shapes, fused Adam,
  ``channels_last``, early stopping, the non-finite guard, the progress bar).

The other concerns live in the mixins it combines: scikit-learn plumbing
(:mod:`~sk_softreg._sklearn`), the held-out rows of early stopping and a
user's own validation set (:mod:`~sk_softreg._held_out`), sample weights
(:mod:`~sk_softreg._weights`), feature selection (:mod:`~sk_softreg._features`) and the fast layer
(:mod:`~sk_softreg._fast_loop`). The weight penalties are one engine per fit
(:mod:`~sk_softreg._engine`), held with the rest of the fit's state in a
:class:`~sk_softreg._fit_state.FitState`.
"""

import inspect
import math
import numbers
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.metrics import get_scorer_names
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_parameter_constraints,
)

from ._batching import unpack_weights
from ._callbacks import (
    NonFiniteGuard,
    SwitchedEarlyStopping,
    ValidationScore,
    check_finite_weights,
)
from ._engine import FlatPenaltyEngine, PenaltyEngine
from ._fast_loop import FastLoopMixin
from ._features import FeatureSelectionMixin
from ._fit_state import HISTORY_TERMS, EpochTerms, FitState
from ._held_out import HeldOutMixin
from ._progress import EpochProgressBar
from ._sklearn import SklearnPlumbingMixin
from ._weights import SampleWeightMixin
from .penalties import select_penalized, weighted_mean

__all__ = ["SoftRegMixin"]


_NON_NEGATIVE = Interval(numbers.Real, 0, None, closed="left")
# fused Adam/AdamW kernels exist on these devices in every supported torch (>= 2.4)
_FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)
_FUSED_DEVICE_TYPES = frozenset({"cpu", "cuda"})
_FUSED_OFF_KEYS = frozenset({"fused", "foreach", "differentiable"})

#: the name pickles of release 0.1.0 give the early-stopping callback
_SwitchedEarlyStopping = SwitchedEarlyStopping


class SoftRegMixin(
    SklearnPlumbingMixin, HeldOutMixin, SampleWeightMixin, FeatureSelectionMixin, FastLoopMixin
):
    """λ1 / λ2 / α soft regularization on top of a ``skorch.NeuralNet``.

    Subclasses provide ``_default_module``, ``_validate_fit_data``,
    ``_encode_targets``, ``_inferred_module_kwargs``, ``_kl_term``,
    ``_example_input`` and ``_onnx_graph`` (and may override ``_data_loss``,
    ``_data_and_kl`` and ``_user_targets``).
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
        "scoring": [StrOptions({"loss", *get_scorer_names()}), callable],
    }
    _finite_params = ("lambda1", "lambda2", "lambda_features", "alpha", "tol")
    #: the penalties' gradients through the loss, not added after backward (for training
    #: loops that scale or accumulate the loss's gradient: Accelerate)
    _penalties_in_loss = False
    #: build Adam and AdamW with fused=True unless the user chose (see get_params_for)
    _fused_adam_default = True

    # ------------------------------------------------------------------
    # checks (in fit, never in __init__)
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
            dropped before training, so the fit equals one without them
            (except that a class whose rows all weigh 0 stays in the
            classifier's ``classes_``, as in scikit-learn); constant
            weights give exactly the unweighted fit. The weights
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
        X, y, sample_weight = self._fit_data(X, y, sample_weight, reset=reset)
        with self._seeded():
            if reset:
                self.initialize()
            with self._training() as state:
                super().partial_fit(self._with_weights(X, sample_weight), y, **fit_params)
        self._after_fit(X, y, sample_weight, held_out=state.dataset_valid)
        return self

    def _fit_data(self, X, y, sample_weight, reset, classes=None, partial=False):
        """The validated rows to train on, ``(X, y, weights)``: the first step of
        ``fit``, ``partial_fit`` and a stacked member's set-up.

        Rows of weight 0 are dropped (:meth:`_weighted_rows`). A first fit of the
        classifier reads its classes before that (:meth:`_target_labels`), so a
        class whose rows all weigh 0 keeps its place in ``classes_``, as in
        scikit-learn. ``classes`` is ``partial_fit``'s.
        """
        if classes is None and reset:
            classes = self._target_labels(y, sample_weight)
        X, y, sample_weight = self._weighted_rows(
            X, y, sample_weight, classes=classes, partial=partial
        )
        X, y = self._validate_fit_data(
            X, y, reset=reset, classes=classes, sample_weight=sample_weight
        )
        return X, y, sample_weight

    def _target_labels(self, y, sample_weight):
        """The labels of y to keep whatever rows are dropped, or None (the regressor)."""
        return None

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
        X, y, sample_weight = self._fit_data(
            X, y, sample_weight, reset=reset, classes=classes, partial=True
        )
        self._incremental = True  # early_stopping="auto" is off in partial_fit, as in sklearn
        try:
            if reset:
                self.initialize()
            with self._training() as state:
                super().partial_fit(self._with_weights(X, sample_weight), y, **fit_params)
        finally:
            self._incremental = False
        self._after_fit(X, y, sample_weight, held_out=state.dataset_valid)
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
        with torch.random.fork_rng(devices=self._cuda_devices()):
            torch.manual_seed(seed)
            yield

    def _after_fit(self, X, y, sample_weight=None, held_out=None):
        """Set the fitted attributes after training on ``X, y``; ``held_out`` is the
        validation ``Dataset`` of the fit (``early_stopping`` or a ``train_split``), if any."""
        check_finite_weights(self)
        params = self._sparsity_params()
        total = sum(p.numel() for p in params)
        zeros = sum(int((p == 0).sum()) for p in params)
        self.sparsity_ = zeros / total if total else 0.0
        self._set_feature_importances()
        self.n_iter_ = len(self.history)
        stopper = dict(self.callbacks_).get("early_stopping")
        self.best_epoch_ = (stopper.best_epoch_ if stopper is not None else 0) or self.n_iter_

    # ------------------------------------------------------------------
    # building the network
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
            try:
                inferred = self._inferred_module_kwargs()
            except AttributeError:  # initialize() before any data: the module's own arguments
                inferred = {}
            for key, value in inferred.items():
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
            channels_last = self._torch_device().type == "cpu" and _layout_agnostic(self.optimizer)
            self.module_.to(
                memory_format=torch.channels_last if channels_last else torch.contiguous_format
            )
        return super().initialize_optimizer(*args, **kwargs)

    def get_params_for(self, prefix):
        """skorch's, with shuffled training batches and fused Adam as defaults.

        Adam and AdamW (exactly these classes) are built with ``fused=True``
        on a device where torch has their fused kernels, unless the user
        chose ``optimizer__fused``, ``__foreach`` or ``__differentiable``.
        """
        params = super().get_params_for(prefix)
        if prefix == "iterator_train" and not {"sampler", "batch_sampler"} & params.keys():
            params.setdefault("shuffle", True)  # a sampler of the user's orders the rows
        elif (
            prefix == "optimizer"
            and self._fused_adam_default
            and self.optimizer in _FUSED_OPTIMIZERS
            and _FUSED_OFF_KEYS.isdisjoint(params)
            and self._torch_device().type in _FUSED_DEVICE_TYPES
        ):
            params["fused"] = True
        return params

    def get_default_callbacks(self):
        """skorch's defaults after the non-finite guard; with ``verbose >= 1`` a tqdm
        bar on stderr replaces the epoch table (``verbose >= 2`` keeps the table
        too); with ``early_stopping``, skorch's ``EarlyStopping`` on ``valid_loss``
        (``scoring="loss"``) or on ``valid_score``, which :class:`ValidationScore`
        records (greater is better)."""
        callbacks = [("non_finite", NonFiniteGuard()), *super().get_default_callbacks()]
        if self.verbose >= 1:
            if self.verbose < 2:
                callbacks = [(name, cb) for name, cb in callbacks if name != "print_log"]
            callbacks.append(("progress", EpochProgressBar()))
        if self.early_stopping:
            on_loss = self._validation_scorer() is None
            if not on_loss:
                callbacks.append(("valid_score", ValidationScore()))
            callbacks.append(("early_stopping", SwitchedEarlyStopping(
                monitor="valid_loss" if on_loss else "valid_score",
                patience=self.n_iter_no_change, threshold=self.tol,
                threshold_mode="abs", lower_is_better=on_loss, load_best=True,
            )))
        return callbacks

    def _cuda_devices(self):
        """The CUDA device this fit runs on, as a list for ``fork_rng`` (empty on the CPU)."""
        device = self._torch_device()
        return [device.index or 0] if device.type == "cuda" else []

    # ------------------------------------------------------------------
    # the fit's state
    @contextmanager
    def _training(self):
        """Within: a :class:`~sk_softreg._fit_state.FitState` for skorch's ``partial_fit``
        (``on_train_begin`` to ``on_train_end``), closed also when training raises."""
        self._fit_state = state = FitState()
        try:
            with self._scoring_in_user_targets():
                yield state
        finally:
            self._fit_state.close()
            self._fit_state = None

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        if self.lambda_features:
            try:
                self._input_weight()
            except ValueError:
                self.initialized_ = False  # the net was never trained
                raise

    def _penalized_params(self):
        """The weights the λ penalties act on (``penalize``)."""
        return select_penalized(self.module_, self.penalize)

    def _sparsity_params(self):
        """The weights ``sparsity_`` counts: the penalized ones (:meth:`_penalized_params`)."""
        return self._penalized_params()

    def _penalty_engine(self):
        """The fit's penalty engine (:mod:`~sk_softreg._engine`); outside a fit, a new one.

        The flat-buffer engine where the fast layer is on and the device is
        the CPU, the reference engine elsewhere.
        """
        state = getattr(self, "_fit_state", None)
        params = None
        if state is not None and state.engine is not None and state.engine_module is self.module_:
            if not state.reselect:
                return state.engine
            # the epoch's first use: a callback (skorch's Freezer, Unfreezer) may have
            # changed which weights train, and the penalties act on the trainable ones
            state.reselect = False
            params = self._penalized_params()
            if [id(p) for p in params] == [id(p) for p in state.engine.params]:
                return state.engine
        if params is None:
            params = self._penalized_params()
        args = (params, self.lambda1, self.lambda2, self.l1_method)
        if self._fast_layer and self._torch_device().type == "cpu":
            engine = FlatPenaltyEngine(*args)
        else:
            engine = PenaltyEngine(*args, in_loss=self._penalties_in_loss)
        if state is not None:
            state.close()
            state.engine, state.engine_module = engine, self.module_
        return engine

    def _input_weight(self):
        """The input layer's weight for ``lambda_features``, looked up once per fit."""
        state = getattr(self, "_fit_state", None)
        if state is not None and state.feature_weight and state.feature_weight[0] is self.module_:
            return state.feature_weight[1]
        weight = self._feature_weight()
        if state is not None:
            state.feature_weight = (self.module_, weight)
        return weight

    # ------------------------------------------------------------------
    # the objective
    def _penalties_active(self):
        """True if any of λ1, λ2, α and λf is non-zero."""
        return bool(self.lambda1 or self.lambda2 or self.alpha or self.lambda_features)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The objective on a training batch, the data loss otherwise (``valid_loss``).

        ``mean ℓ + α·mean KL + λ1·Σ|w| + λ2·Σw² + λf·Σ_j‖W1[:, j]‖``. The λ
        terms are values without gradient: ``train_step_single`` adds the
        gradients of λ2 (and of λ1 under ``l1_method="subgradient"``) after
        ``backward`` (or, with ``_penalties_in_loss``, they come through the
        loss), and ``train_step`` applies λ1 and λf by proximal steps.
        ``X`` carrying sample weights makes the means weighted ones (in
        validation too); the λ terms do not change.
        """
        X, weights = unpack_weights(X)
        if not (training and self._penalties_active()):
            return self._data_term(y_pred, y_true, X, weights, training)
        loss, kl = self._data_and_kl(y_pred, y_true, X, weights)
        l1 = l2 = features = None
        if self.lambda1 or self.lambda2:
            sum_abs, sum_squares = self._penalty_engine().values()
            l1, l2 = self.lambda1 * sum_abs, self.lambda2 * sum_squares
        if self.lambda_features:
            features = self._features_value(self._input_weight())
        for term in (l1, l2, features):
            if term is not None:
                loss = loss + term
        state = getattr(self, "_fit_state", None)
        if state is not None and state.evaluations is not None:
            state.evaluations.append((loss, (l1, l2, kl, features), len(y_pred)))
        return loss

    def _kl_dropout_layers(self):
        """The module's dropout layers that the KL term sees switched off; none here
        (the regressor's KL is computed on the dropout-free output)."""
        return []

    def _data_and_kl(self, y_pred, y_true, X, weights):
        """``(mean ℓ + α·mean KL, mean KL)`` of a training batch; ``None`` for the KL at α = 0."""
        data = self._data_term(y_pred, y_true, X, weights, training=True)
        if not self.alpha:
            return data, None
        kl_i = self._kl_term(y_pred, y_true, X)
        kl = kl_i.mean() if weights is None else weighted_mean(kl_i, weights)
        return torch.add(data, kl, alpha=self.alpha), kl

    def train_step_single(self, batch, **fit_params):
        """skorch's forward, loss and backward, then the penalties' gradients
        (:meth:`~sk_softreg._engine.PenaltyEngine.add_grads_`), so that
        ``on_grad_computed`` callbacks (e.g. gradient clipping) see the full gradient."""
        step = super().train_step_single(batch, **fit_params)
        if self.lambda1 or self.lambda2:
            self._penalty_engine().add_grads_()
        return step

    def train_step(self, batch, **fit_params):
        """skorch's step, then the proximal L1 and group-L1 steps.

        The penalty terms recorded in history are those of the loss evaluation
        that skorch records as ``train_loss`` (the first one by default; LBFGS
        evaluates the loss several times per step).
        """
        state = getattr(self, "_fit_state", None)
        if state is None or not self._penalties_active():
            return super().train_step(batch, **fit_params)
        state.evaluations = evaluations = []
        try:
            step = super().train_step(batch, **fit_params)
        finally:
            state.evaluations = None
        if evaluations:
            loss, terms, n = next((e for e in evaluations if e[0] is step["loss"]), evaluations[0])
            if state.terms is None:
                state.terms = EpochTerms()
            state.terms.add(terms, n)
        self._proximal_step()
        return step

    def _proximal_step(self):
        """Soft-threshold the penalized weights; called right after the optimizer step."""
        if self.lambda1:
            self._penalty_engine().prox_(self.optimizer_)
        if self.lambda_features:
            self._prox_features(self._input_weight())

    # ------------------------------------------------------------------
    # history: the epoch's mean penalty terms
    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        super().on_epoch_begin(net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs)
        state = getattr(self, "_fit_state", None)
        if state is not None:
            state.terms = None
            state.reselect = True  # see _penalty_engine

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        state = getattr(self, "_fit_state", None)
        terms = state.terms if state is not None else None
        # no terms were accumulated when no penalty is active: they are all 0
        means = terms.means() if terms is not None else [0.0] * len(HISTORY_TERMS)
        for name, mean, scale in zip(HISTORY_TERMS, means, (1.0, 1.0, self.alpha, 1.0)):
            self.history.record(name, scale * mean)
        super().on_epoch_end(net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs)


def _layout_agnostic(optimizer):
    """True for torch's own optimizers, which work on any memory layout (not LBFGS)."""
    return (
        isinstance(optimizer, type)
        and optimizer.__module__.startswith("torch.optim.")
        and optimizer is not torch.optim.LBFGS
    )


def _accepted_kwargs(factory):
    """Names of keyword arguments a module class or factory accepts."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return set()
    return set(signature.parameters)
