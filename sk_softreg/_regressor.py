"""SoftRegRegressor: tabular regression with λ1 / λ2 penalties and a Gaussian KL term."""

import numbers

import numpy as np
import torch
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    validate_data,
)
from skorch import NeuralNetRegressor
from skorch.utils import to_numpy, to_tensor

from ._base import SoftRegMixin
from ._batching import unpack_weights
from ._predictive_std import DropoutFreeKLMixin, std_scale
from ._size_rules import AUTO_STOP_MIN_VALID, auto_batch_size, auto_dropout, auto_lr, is_auto
from ._validation import (
    FLOAT_DTYPES,
    as_float32,
    first_sample_shape,
    is_lazy,
    predicted_sample_shape,
)
from .modules import GaussianMLP, HalfMSELoss, LogVariance
from .penalties import clamp_log_var, gaussian_soft_kl, soft_target_std

__all__ = ["SoftRegRegressor"]

class SoftRegRegressor(DropoutFreeKLMixin, SoftRegMixin, NeuralNetRegressor):
    """A neural regressor with L1, L2 and a Gaussian KL soft regularization.

    The network predicts a mean ``mu`` and a log-variance ``s = log sigma**2``
    per output. The training objective for a batch B is

    ``mean_B criterion(mu, y) + alpha * mean_B KL(N(y, tau**2) || N(mu, sigma**2))
    + lambda1 * sum_W |w| + lambda2 * sum_W w**2 + lambda_features * sum_j ||W1[:, j]||_2``

    with the default criterion ``0.5 * (y - mu)**2``. The KL term trains the
    variance head, which gives ``predict(X, return_std=True)``.

    ``fit`` takes arrays, or lazy data: a torch ``Dataset`` of ``(x, y)`` pairs
    (``x`` a float32 tensor of shape ``(n_features,)``), or a skorch
    ``SliceDataset`` with the targets as ``y``. A 2-D ``y`` is one regression
    target per column, a matrix of 0 and 1 included: for multilabel
    classification use :class:`~sk_softreg.SoftRegCNNClassifier`.

    Parameters
    ----------
    module : torch.nn.Module class or instance, default=None
        ``None`` uses :class:`~sk_softreg.modules.GaussianMLP` with a dropout
        that depends on the number ``n`` of rows given to ``fit``:
        ``clip(0.5 - 0.4 * log10(n / 1000), 0.1, 0.5)`` (0.5 up to 1,000
        rows, 0.3 at 3,162, 0.1 from 10,000), unless you set
        ``module__dropout``. A module may
        return ``2 * n_outputs`` columns (means, then log-variances) or
        ``n_outputs`` columns (means; one learned log-variance per output is
        then added). A module class whose constructor takes ``n_features`` or
        ``n_outputs`` gets them inferred from the data.
    lambda1 : float, default=0.0
        Weight of the L1 penalty ``sum_W |w|``.
    lambda2 : float, default=0.0
        Weight of the L2 penalty ``sum_W w**2``.
    lambda_features : float, default=0.0
        Weight of the group-L1 penalty ``sum_j ||W1[:, j]||_2`` on the columns
        of the first layer's weight (one group per input feature), applied by a
        proximal group soft-threshold after each optimizer step so that whole
        inputs drop out exactly; see ``feature_importances_``. Needs a module
        whose first layer is an ``nn.Linear`` taking the input features (as
        :class:`~sk_softreg.modules.GaussianMLP` does). Standardize X first.
    alpha : float, default=0.0
        Weight of the Gaussian KL term.
    tau : float, default=0.1
        Standard deviation of the soft target ``N(y, tau**2)``, in units of the
        (standardized, if ``normalize_y``) target: a floor on the predicted
        variance.
    normalize_y : bool, default=True
        Standardize y for training and map predictions back.
    penalize : {"weights", "all"} or callable, default="weights"
        Which parameters of ``module_`` the λ penalties act on (as for
        :class:`SoftRegCNNClassifier`). The learned log-variance a module that
        returns means only gets, ``log_var_``, is never penalized: it is a
        per-output scale, not a weight of the network.
    l1_method : {"proximal", "subgradient"}, default="proximal"
        How the L1 penalty is applied (see :class:`SoftRegCNNClassifier`).
    random_state : int, RandomState instance or None, default=None
        Seeds initialization, shuffling, dropout and the validation split of
        ``early_stopping``.
    early_stopping : bool or "auto", default="auto"
        Train on all but a random ``validation_fraction`` of the rows, stop
        after ``n_iter_no_change`` epochs without a ``tol`` improvement of
        ``scoring`` and keep the best epoch's weights; as for
        :class:`SoftRegCNNClassifier` (which also says how a ``train_split``
        of your own is used). ``"auto"``: on in ``fit`` when the validation
        share holds at least 30 rows (``n * validation_fraction >= 30``, 300
        rows at the default), off on smaller data and in ``partial_fit``
        (``True`` there is an error).
    validation_fraction : float in (0, 1), default=0.1
        Share of the rows held out by ``early_stopping``.
    n_iter_no_change : int, default=10
        Patience of ``early_stopping``, in epochs.
    tol : float, default=1e-4
        Least improvement of ``scoring`` that ``early_stopping`` counts as
        progress (for ``"loss"``: a decrease of the half squared error of the
        standardized target).
    scoring : str or callable, default="loss"
        What ``early_stopping`` watches on the validation set, as for
        :class:`SoftRegCNNClassifier`: ``"loss"`` (the validation half
        squared error, lower is better) or a scorer name or callable
        (greater is better; it gets the rows in y's units). The loss ranks
        epochs as R² and the mean squared error do, without a scorer call
        per epoch.
    criterion : torch criterion class, default=HalfMSELoss
        Data loss on the predicted means.
    optimizer : torch optimizer class, default=torch.optim.Adam
    lr : float or "auto", default="auto"
        Adam's learning rate. ``"auto"``: ``1e-3 * min(b / 64, 4) ** 0.8`` for
        the training batch size ``b`` in use (1.74e-3 at 128, 3.03e-3 from
        256). ``optimizer__lr`` takes precedence.
    max_epochs : int, default=200
        Number of epochs (scikit-learn's ``max_iter``); the most with
        ``early_stopping``.
    batch_size : int or "auto", default="auto"
        ``"auto"``: 128 below 2,000 rows given to ``fit``, 256 from 2,000
        (for training and prediction). ``-1`` is the whole data set;
        ``iterator_train__batch_size`` / ``iterator_valid__batch_size`` take
        precedence. The ``"auto"`` values were chosen on five public tables
        of 442 to 28,155 rows (see the user guide); ``get_params`` returns
        ``"auto"``, and the values follow from the rows of the first ``fit``
        (or ``partial_fit``) call.
    train_split : callable or None, default=None
        ``None`` trains on all data.
    callbacks : list or None, default=None
    device : str, torch.device or None, default="auto"
        ``"auto"`` uses CUDA when available, else the CPU.
    verbose : int, default=0
    **kwargs
        Any other ``skorch.NeuralNet`` parameter.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Column names, when fit on a DataFrame.
    n_outputs_ : int
        Number of targets.
    y_mean_, y_scale_ : ndarray of shape (n_outputs,)
        Target standardization (0 and 1 without ``normalize_y``).
    residual_std_ : ndarray of shape (n_outputs,)
        Standard deviation of the training residuals, in y's units; the std
        that ``predict(return_std=True)`` returns when ``alpha == 0``.
    std_scale_ : ndarray of shape (n_outputs,)
        With ``alpha > 0``, the factor on the variance head's std that
        minimizes the Gaussian NLL on the training rows, or on the fit's
        validation rows (``early_stopping`` or a ``train_split``) where
        that is larger (see the user guide); 1 when ``alpha == 0``.
    sparsity_ : float
        Fraction of the penalized weights that are exactly zero. At ``alpha == 0``
        the default module's log-variance head, which the fit neither trains
        nor uses, is left out.
    feature_importances_ : ndarray of shape (n_features,)
        Euclidean norms of the first layer's weight columns, normalized to sum
        to 1; exactly 0 for the inputs that ``lambda_features`` dropped. Only
        when the module's first layer is an ``nn.Linear`` taking the inputs.
        ``SelectFromModel(reg, threshold=1e-12)`` keeps the inputs in use.
    n_features_selected_ : int
        Number of inputs whose weight column is not zero (same condition).
    n_iter_ : int
        Epochs trained since the network was initialized.
    best_epoch_ : int
        The epoch whose weights the estimator holds: with ``early_stopping``,
        the one with the best validation loss; otherwise the last, ``n_iter_``.
    module_ : torch.nn.Module
    history_ : skorch.History
        Per epoch: ``train_loss`` (the whole objective), ``train_l1``,
        ``train_l2``, ``train_kl``, ``train_features`` (the weighted terms).

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from sk_softreg import SoftRegRegressor
    >>> X, y = make_regression(n_samples=100, n_features=5, random_state=0)
    >>> reg = SoftRegRegressor(alpha=0.1, max_epochs=5, random_state=0, device="cpu")
    >>> mean, std = reg.fit(X, y).predict(X[:4], return_std=True)
    >>> mean.shape, std.shape
    ((4,), (4,))
    """

    _default_module = GaussianMLP
    _parameter_constraints = {
        **SoftRegMixin._parameter_constraints,
        "tau": [Interval(numbers.Real, 0, None, closed="neither")],
        "normalize_y": ["boolean"],
        "early_stopping": ["boolean", StrOptions({"auto"})],
        "lr": [Interval(numbers.Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "batch_size": [
            Interval(numbers.Integral, 1, None, closed="left"),
            Options(numbers.Integral, {-1}),
            StrOptions({"auto"}),
        ],
    }
    _finite_params = (*SoftRegMixin._finite_params, "tau")

    def __init__(
        self,
        module=None,
        *,
        lambda1=0.0,
        lambda2=0.0,
        lambda_features=0.0,
        alpha=0.0,
        tau=0.1,
        normalize_y=True,
        penalize="weights",
        l1_method="proximal",
        random_state=None,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        scoring="loss",
        criterion=HalfMSELoss,
        optimizer=torch.optim.Adam,
        lr="auto",
        max_epochs=200,
        batch_size="auto",
        train_split=None,
        callbacks=None,
        device="auto",
        verbose=0,
        **kwargs,
    ):
        super().__init__(
            module,
            criterion=criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            callbacks=callbacks,
            device=device,
            verbose=verbose,
            **kwargs,
        )
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.lambda_features = lambda_features
        self.alpha = alpha
        self.tau = tau
        self.normalize_y = normalize_y
        self.penalize = penalize
        self.l1_method = l1_method
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.scoring = scoring

    # ------------------------------------------------------------------
    # data
    def _validate_fit_data(self, X, y, reset, classes=None, sample_weight=None):
        if is_lazy(X):
            return self._validate_fit_dataset(X, y, reset)
        X, y = validate_data(
            self, X, y, reset=reset, dtype=FLOAT_DTYPES, multi_output=True, y_numeric=True
        )
        if reset:
            self._n_fit_rows = len(y)
        return as_float32(X), self._standardize_y(y, reset, sample_weight)

    def _validate_fit_dataset(self, X, y, reset):
        """Lazy data: a torch ``Dataset`` of ``(x, y)`` pairs, or a ``SliceDataset`` and y.

        Each ``x`` must be a float32 tensor of shape ``(n_features,)``. The
        targets are read once from the whole data set (for a ``Dataset`` of
        pairs this loads every sample) to standardize them and to compute
        ``residual_std_``.
        """
        pairs = y is None
        shape = first_sample_shape(X, y, type(self).__name__, 1, "1-D feature tensors")
        if reset:
            self.n_features_in_ = shape[0]
        elif shape[0] != self.n_features_in_:
            raise ValueError(
                f"X has {shape[0]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        if pairs:
            y = [X[i][1] for i in range(len(X))]  # one pass over the data
        elif is_lazy(y):
            y = list(y)
        y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
        check_consistent_length(X, y)
        if reset:
            self._n_fit_rows = len(y)
        y_std = self._standardize_y(y, reset)
        return (_ServedTargets(X, y_std) if pairs else X), y_std

    def _standardize_y(self, y, reset, sample_weight=None):
        """float32 targets of shape (n, n_outputs_), standardized when ``normalize_y``
        (by their ``sample_weight``-weighted mean and std)."""
        y = np.asarray(y, dtype=np.float64)
        if reset:
            self._y_1d = y.ndim == 1
            y2 = y.reshape(len(y), -1)
            self.n_outputs_ = y2.shape[1]
            if self.normalize_y:
                self.y_mean_ = np.average(y2, axis=0, weights=sample_weight)
                scale = np.sqrt(np.average((y2 - self.y_mean_) ** 2, axis=0, weights=sample_weight))
                self.y_scale_ = np.where(scale > 0, scale, 1.0)
            else:
                self.y_mean_ = np.zeros(self.n_outputs_)
                self.y_scale_ = np.ones(self.n_outputs_)
        y2 = y.reshape(len(y), -1)
        if y2.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {y2.shape[1]} outputs, but {type(self).__name__} was fitted with "
                f"{self.n_outputs_}."
            )
        y_std = (y2 - self.y_mean_) / self.y_scale_
        return y_std.astype(np.float32)

    def _inferred_module_kwargs(self):
        kwargs = {"n_features": self.n_features_in_, "n_outputs": self.n_outputs_}
        if self.module is None or self.module is GaussianMLP:
            kwargs["dropout"] = auto_dropout(self._fit_rows())
        return kwargs

    # ------------------------------------------------------------------
    # size-dependent defaults ("auto"), resolved from the rows given to fit
    def _fit_rows(self):
        """Rows of the first ``fit`` / ``partial_fit`` call (0 if unknown, e.g. a loaded
        model from an older file: the small-data values then apply)."""
        return getattr(self, "_n_fit_rows", 0)

    def _early_stopping_active(self):
        if isinstance(self.early_stopping, str):  # "auto"
            return (
                not getattr(self, "_incremental", False)
                and self._fit_rows() * self.validation_fraction >= AUTO_STOP_MIN_VALID
            )
        return super()._early_stopping_active()

    def get_params_for(self, prefix):
        """skorch's, plus the resolved ``batch_size="auto"`` and ``lr="auto"``.

        An explicit ``iterator_*__batch_size`` or ``optimizer__lr`` wins;
        ``get_params`` still returns ``"auto"``.
        """
        params = super().get_params_for(prefix)
        if prefix in ("iterator_train", "iterator_valid") and is_auto(self.batch_size):
            params.setdefault("batch_size", auto_batch_size(self._fit_rows()))
        elif prefix == "optimizer" and "lr" not in params and is_auto(self.lr):
            batch = self.get_params_for("iterator_train").get("batch_size", self.batch_size)
            params["lr"] = auto_lr(self._fit_rows() if batch == -1 else batch)
        return params

    def _example_input(self, n):
        return torch.zeros(n, self.n_features_in_)

    def initialize_module(self):
        """Build ``module_``; add a learned log-variance if it returns means only."""
        super().initialize_module()
        if not hasattr(self, "n_outputs_"):
            return self
        width = self._output_width()
        k = self.n_outputs_
        if width == k:
            self.log_var_ = LogVariance(k)
        elif width == 2 * k:
            if hasattr(self, "log_var_"):
                del self.log_var_
        else:
            raise ValueError(
                f"The module returns {width} columns per sample; {type(self).__name__} needs "
                f"{k} (means) or {2 * k} (means, then log-variances) for {k} output(s)."
            )
        return self

    def _output_width(self):
        module = self.module_
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = module(self._example_input(2))
        finally:
            module.train(was_training)
        return out.shape[-1]

    # ------------------------------------------------------------------
    # the objective
    def _split_output(self, y_pred, log_var=None):
        """Means and clamped log-variances, each of shape (n, n_outputs_).

        ``log_var`` is the :class:`~sk_softreg.modules.LogVariance` used when
        the module returns means only (default ``log_var_``).
        """
        k = self.n_outputs_
        if y_pred.shape[-1] == 2 * k:
            return self._means(y_pred), clamp_log_var(y_pred[:, k:])
        log_var = self.log_var_ if log_var is None else log_var
        return y_pred, clamp_log_var(log_var.log_var).expand_as(y_pred)

    def _means(self, y_pred):
        """The predicted means (n, n_outputs_), without the log-variances."""
        k = self.n_outputs_
        return y_pred[:, :k] if y_pred.shape[-1] == 2 * k else y_pred

    def _data_loss(self, y_pred, y_true, X=None, training=False):
        mu = self._means(y_pred)
        y_true = to_tensor(y_true, device=self.device)
        if y_true.shape != mu.shape:  # (n,) targets of one output
            y_true = y_true.view_as(mu)
        return self.criterion_(mu, y_true)

    def _kl_term(self, y_pred, y_true, X=None):
        """Per-sample Gaussian KL, on the output as ``predict`` computes it.

        The std that ``predict`` returns comes from the network without
        dropout, so the KL that fits it sees that network too: in training,
        the KL (value and gradient) uses the module's output on ``X`` with
        its dropout layers switched off (:meth:`_dropout_free_output`), while
        the data loss keeps the dropout output. With dropout, the KL optimum
        ``tau**2 + E[(y - mu)**2]`` would otherwise include the dropout noise
        of ``mu`` and overstate the std (see the user guide).
        """
        if X is not None:
            y_pred = self._dropout_free_output(y_pred, X)
        mu, log_var = self._split_output(y_pred)
        return gaussian_soft_kl(y_true.view_as(mu), mu, log_var, self.tau)

    def _after_fit(self, X, y, sample_weight=None, held_out=None):
        """skorch's attributes, then ``residual_std_`` and ``std_scale_``.

        ``std_scale_`` is :func:`std_scale` on the training rows, or on the
        held-out rows if the fit had any and they ask for a larger one: test
        residuals are not expected below the training residuals, and a
        smaller held-out scale is the optimism of early stopping's choice of
        epoch on those very rows, or their sampling noise.
        """
        super()._after_fit(X, y, sample_weight, held_out)
        mu, log_var = self._predict_standardized(X)
        residual = y.reshape(len(y), -1) - mu
        mse = np.average(residual.astype(np.float64) ** 2, axis=0, weights=sample_weight)
        self.residual_std_ = np.sqrt(mse) * self.y_scale_
        self.std_scale_ = np.ones(self.n_outputs_)
        if not self.alpha:
            return
        scale = self._std_scale(residual, log_var, sample_weight)
        if held_out is not None and len(held_out):
            scale = np.maximum(scale, self._std_scale(*self._held_out_residuals(held_out)))
        self.std_scale_ = scale

    def _sparsity_params(self):
        """The penalized weights, less the log-variance head of a :class:`~sk_softreg.modules.GaussianMLP`
        at ``alpha == 0``: such a fit neither trains nor uses that head (its std is
        ``residual_std_``), so the head's zero initialization is not sparsity."""
        params = super()._sparsity_params()
        if self.alpha or not isinstance(self.module_, GaussianMLP):
            return params
        head = {id(p) for p in self.module_.log_var.parameters()}
        return [p for p in params if id(p) not in head]

    def _std_scale(self, residual, log_var, sample_weight):
        """:func:`std_scale` of the unscaled predictive std on these rows."""
        std = self._predictive_std(torch.from_numpy(log_var.astype(np.float64))).numpy()
        return std_scale(residual, std, sample_weight)

    def _encode_targets(self, y):
        y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
        return self._standardize_y(y, reset=False)

    def _user_targets(self, y):
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1) * self.y_scale_ + self.y_mean_
        return y[:, 0] if self._y_1d else y

    def _held_out_residuals(self, dataset):
        """Standardized residuals, log-variances and sample weights (or None) on ``dataset``."""
        residuals, log_vars, weights = [], [], []
        for Xi, yi in self.get_iterator(dataset, training=False):
            y_pred = self.evaluation_step((Xi, yi), training=False)
            with torch.no_grad():
                mu, log_var = self._split_output(y_pred)
            yi = to_tensor(yi, device="cpu").reshape(mu.shape)
            residuals.append((yi - mu.cpu()).numpy())
            log_vars.append(log_var.cpu().numpy())
            weights.append(unpack_weights(Xi)[1])
        if weights[0] is not None:
            weights = torch.cat([torch.as_tensor(w).cpu() for w in weights]).numpy()
        else:
            weights = None
        return np.concatenate(residuals), np.concatenate(log_vars), weights

    # ------------------------------------------------------------------
    # prediction
    @available_if(lambda self: False)
    def predict_proba(self, X):
        """Not available: a regressor has no class probabilities (use ``predict``)."""

    def _predict_standardized(self, X):
        y_pred = self.forward(X, training=False)
        with torch.no_grad():
            mu, log_var = self._split_output(y_pred)
        # detached: skorch's on-train scoring passes the training batches' cached outputs
        return to_numpy(mu), to_numpy(log_var)

    def predict(self, X, return_std=False):
        """Predicted means, and optionally predictive standard deviations.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or a torch Dataset
        return_std : bool, default=False
            Also return the predictive std of y: from the variance head,
            corrected for the soft target's width ``tau`` and scaled by
            ``std_scale_``, when ``alpha > 0`` (see the user guide), else
            ``residual_std_``.

        Returns
        -------
        mean : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            In y's units and shape.
        std : ndarray of the same shape
            Only when ``return_std`` is true.
        """
        check_is_fitted(self)
        X = unpack_weights(X)[0]  # a weighted fit's packed rows, as skorch's scoring passes them
        if not is_lazy(X):  # lazy data; skorch's scoring callbacks pass validation Datasets
            X = as_float32(validate_data(self, X, reset=False, dtype=FLOAT_DTYPES))
        else:  # one sample read
            shape = predicted_sample_shape(X, type(self).__name__)
            if shape != (self.n_features_in_,):
                raise ValueError(
                    f"X has samples of shape {shape}, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input."
                )
        mu, log_var = self._predict_standardized(X)
        mean = mu.astype(np.float64) * self.y_scale_ + self.y_mean_
        if self._y_1d:
            mean = mean[:, 0]
        if not return_std:
            return mean
        std = self._predictive_std(torch.from_numpy(log_var.astype(np.float64)))
        std = std.numpy() * self.y_scale_
        return mean, (std[:, 0] if self._y_1d else std)

    def _predictive_std(self, log_var):
        """Predictive std of y, in standardized units, from the head's log-variances.

        With ``alpha > 0``, ``std_scale_ * sqrt(max(exp(log_var) - tau**2, tau**2))``
        (:func:`~sk_softreg.penalties.soft_target_std`): the KL optimum is
        ``sigma**2 = tau**2 + E[(y - mu)**2 | x]``, so the head's sigma includes
        the soft target's own width. With ``alpha == 0`` the head is untrained
        and the std is ``residual_std_`` (standardized), for every sample.

        Parameters
        ----------
        log_var : torch.Tensor of shape (n_samples, n_outputs)
            Clamped log-variances in standardized units.

        Returns
        -------
        torch.Tensor of shape (n_samples, n_outputs)
        """
        if self.alpha:
            scale = getattr(self, "std_scale_", None)  # absent in files saved by 0.1.0
            std = soft_target_std(log_var, self.tau)
            if scale is None:
                return std
            return std * torch.as_tensor(scale, dtype=log_var.dtype, device=log_var.device)
        residual = torch.as_tensor(
            self.residual_std_ / self.y_scale_, dtype=log_var.dtype, device=log_var.device
        )
        return residual.expand_as(log_var)

    def _onnx_graph(self):
        from ._onnx import GaussianGraph

        metadata = {"n_outputs": self.n_outputs_, "normalize_y": self.normalize_y}
        if hasattr(self, "feature_names_in_"):
            metadata["feature_names_in"] = self.feature_names_in_
        return GaussianGraph(self), ["mean", "std"], metadata

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class _ServedTargets(torch.utils.data.Dataset):
    """A ``Dataset`` of ``(x, y)`` pairs served as ``(x, targets[i])``."""

    def __init__(self, dataset, targets):
        self.dataset = dataset
        self.targets = targets

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i][0], self.targets[i]
