"""SoftRegCNNClassifier: image classification with λ1 / λ2 / α soft regularization."""

import math

import numpy as np
import torch
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
)
from skorch import NeuralNet, NeuralNetClassifier
from skorch.callbacks import EpochScoring
from skorch.utils import to_tensor

from ._base import SoftRegMixin
from ._batching import pack_weights, unpack_weights
from ._class_labels import ClassLabelsMixin
from ._images import ImageInputMixin
from ._multilabel import MultilabelMixin, is_label_matrix, subset_correct
from ._torchvision import TorchvisionClassifierNet
from ._validation import is_lazy, predicted_sample_shape
from .modules import SoftRegCNN
from .penalties import kl_from_uniform, kl_to_uniform

__all__ = ["SoftRegCNNClassifier"]

_KL_TERMS = {"label_smoothing": kl_from_uniform, "confidence_penalty": kl_to_uniform}


class SoftRegCNNClassifier(
    ImageInputMixin, MultilabelMixin, ClassLabelsMixin, SoftRegMixin, NeuralNetClassifier
):
    """A CNN classifier trained with L1, L2 and KL soft regularization.

    The training objective for a batch B is

    ``mean_B CE + alpha * mean_B KL + lambda1 * sum_W |w| + lambda2 * sum_W w**2
    + lambda_features * sum_j ||W1[:, j]||_2``

    where W are the penalized weights (see ``penalize``). It is a real
    ``skorch.NeuralNetClassifier``: callbacks, history, ``module__*``
    parameters and user modules keep working.

    ``y`` is either 1-D class labels or, for multilabel problems, an
    ``(n, L)`` indicator matrix of 0 and 1 (one column per label, as
    ``sklearn.preprocessing.MultiLabelBinarizer`` gives): then CE is the
    binary cross-entropy of each label's logit, and both CE and KL are means
    over the labels. An ``(n, 1)`` column is the binary target, as
    scikit-learn's ``type_of_target`` says. See "Multilabel targets" in the
    user guide.

    Parameters
    ----------
    module : torch.nn.Module class or instance, str, default=None
        The network; it must return logits. ``None`` uses
        :class:`~sk_softreg.modules.SoftRegCNN`. A module class whose
        constructor takes ``input_shape`` or ``n_classes`` gets them inferred
        from the data unless set through ``module__*``. A string names a
        torchvision classification model (``"resnet18"``, ``"mobilenet_v3_small"``,
        any of ``torchvision.models.list_models(module=torchvision.models)``),
        built untrained (``weights=None``; pretrained weights are refused) for
        the data's channels and classes, with small images upsampled;
        ``module__*`` reach its constructor. Models with BatchNorm layers (most
        of them) cannot train on a batch of one image: where the training rows
        leave one over (``n % batch_size == 1``, in a fold too), pass
        ``iterator_train__drop_last=True``. See
        :class:`~sk_softreg._torchvision.TorchvisionClassifierNet`.
    lambda1 : float, default=0.0
        Weight of the L1 penalty ``sum_W |w|`` (a sum over weights, independent
        of the data size and the batch size).
    lambda2 : float, default=0.0
        Weight of the L2 penalty ``sum_W w**2``. torch's ``weight_decay`` equals
        ``2 * lambda2``.
    lambda_features : float, default=0.0
        Weight of the group-L1 penalty ``sum_j ||W1[:, j]||_2`` on the columns of
        the first layer's weight, one group per input value, applied by a
        proximal group soft-threshold after each optimizer step (whole inputs
        drop out exactly). Only for a module whose first layer with parameters
        is an ``nn.Linear`` taking the ``C * H * W`` flattened inputs (after
        ``nn.Flatten``); with a convolutional first layer, as in the default
        CNN, ``lambda_features > 0`` raises a ValueError at fit.
    alpha : float, default=0.0
        Weight of the KL term, averaged over the batch.
    kl : {"label_smoothing", "confidence_penalty"}, default="label_smoothing"
        ``"label_smoothing"`` uses ``KL(u || p)`` (u uniform over classes), which
        equals label smoothing up to scale and a constant; ``"confidence_penalty"``
        uses ``KL(p || u) = log K - H(p)``. For multilabel targets, the same two
        directions between each label's Bernoulli(p) and Bernoulli(1/2)
        (K = 2 per label).
    penalize : {"weights", "all"} or callable, default="weights"
        Which parameters the λ penalties act on: kernels with ``ndim > 1``,
        every parameter, or those for which ``penalize(name, param)`` is true.
    l1_method : {"proximal", "subgradient"}, default="proximal"
        ``"proximal"`` soft-thresholds the penalized weights after each
        optimizer step (exact zeros; Adam-preconditioned threshold);
        ``"subgradient"`` adds ``lambda1 * sum |w|`` to the loss.
    image_shape : tuple of int, default=None
        ``(C, H, W)`` or ``(H, W)`` to reshape 2-D input of F features into.
        ``None``: ``(1, sqrt(F), sqrt(F))`` if F is a perfect square, else
        ``(1, 1, F)``.
    train_transform : callable or None, default=None
        A transform of one image tensor ``(C, H, W)``, e.g. a torchvision
        ``transforms.v2`` pipeline such as
        ``v2.Compose([v2.RandomAffine(degrees=8, translate=(0.1, 0.1))])``. It is
        applied on the fly to each image of each *training* batch (with its
        own random draw per image), never in validation or prediction.
        It draws from torch's RNG, so ``random_state`` seeds it. Keep the
        transforms in a ``v2.Compose``: scikit-learn's ``clone`` (used by
        ``GridSearchCV`` and ``cross_val_score``) takes a bare ``RandomAffine``,
        whose ``get_params`` is torchvision's, for an estimator and fails.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the data loss and the KL term, multiplied
        with ``sample_weight``, as in scikit-learn: ``{label: weight}``
        (unlisted labels weigh 1), or ``"balanced"`` for
        ``n_samples / (n_classes * np.bincount(y))``, counted with
        ``sample_weight``. ``"balanced"`` is not supported by ``partial_fit``;
        neither form by a torch ``Dataset`` X (use ``criterion__weight``).
        For multilabel targets only ``"balanced"`` applies: it weights each
        label's positives in the data loss (not in the KL term) by the
        label's negatives over its positives, counted with ``sample_weight``
        and each count floored at one mean row (``pos_weight_``, the
        ``pos_weight`` of ``BCEWithLogitsLoss``); a dict raises a ValueError.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialization, shuffling, dropout, ``train_transform``
        and the validation split of ``early_stopping``. An int makes fit
        deterministic on CPU. The global torch RNG is restored after fit.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified by
        class; for multilabel targets a plain random split), stop once its
        ``scoring`` has not improved by ``tol`` for
        ``n_iter_no_change`` epochs, and restore the weights of the best epoch
        (skorch's ``ValidSplit`` and ``EarlyStopping``, added at
        ``initialize``; ``callbacks`` and ``train_split`` stay as given). With
        a ``train_split`` of your own, its validation set is watched and
        ``validation_fraction`` is unused. In a weighted fit the validation
        loss and score are weighted too. Not supported by ``partial_fit``. Without it,
        every fit runs ``max_epochs`` epochs: unlike scikit-learn's MLP, a
        stalling training loss does not stop it.
    validation_fraction : float in (0, 1), default=0.1
        Fraction of the training data held out when ``early_stopping``.
    n_iter_no_change : int, default=10
        Epochs without an improvement of ``scoring`` on the validation set
        after which ``early_stopping`` stops training.
    tol : float, default=1e-4
        Smallest change of ``scoring`` (absolute, in its units: a decrease of
        the loss, an increase of a score) that counts as an improvement for
        ``early_stopping``.
    scoring : str or callable, default="loss"
        What ``early_stopping`` watches on the validation set, with the
        meaning of ``HistGradientBoostingClassifier``'s ``scoring``:
        ``"loss"`` is the validation loss (the data loss; lower is better,
        progress is a decrease of more than ``tol``); any other value is a
        scikit-learn scorer name or a callable ``scorer(estimator, X, y)``,
        recorded as ``valid_score`` in history (greater is better, progress
        is an increase of more than ``tol``). The scorer gets the validation
        rows in your labels, and their sample weights as ``sample_weight``
        in a weighted fit. ``"loss"`` is the default because on digits
        ``"accuracy"`` kept no more test accuracy and stopped earlier: a
        10% validation set resolves accuracy in steps of about 0.7 points
        (see the user guide).
    criterion : torch criterion class, default=torch.nn.CrossEntropyLoss
        The data loss on logits. For multilabel targets ``CrossEntropyLoss``
        is built as ``torch.nn.BCEWithLogitsLoss``; another criterion gets
        the ``(n, L)`` logits and float 0/1 targets.
    optimizer : torch optimizer class, default=torch.optim.Adam
    lr : float, default=2e-3
        Learning rate.
    max_epochs : int, default=30
        Number of epochs (scikit-learn's ``max_iter``); the most with
        ``early_stopping``.
    batch_size : int, default=64
        Mini-batch size; training batches are shuffled.
    train_split : callable or None, default=None
        ``None`` trains on all data, as in scikit-learn. Pass
        ``skorch.dataset.ValidSplit(0.2)`` to get ``valid_loss`` in history.
    callbacks : list or None, default=None
        skorch callbacks.
    device : str, torch.device or None, default="auto"
        ``"auto"`` uses CUDA when available, else the CPU.
    verbose : int, default=0
        0 prints nothing; 1 draws a tqdm progress bar on stderr (epochs, and
        batches of epochs of 50+ batches) with the loss and penalty terms; 2 also
        prints skorch's epoch table.
    **kwargs
        Any other ``skorch.NeuralNet`` parameter (``iterator_train__*``,
        ``optimizer__*``, ``module__*``, ``warm_start``, ...).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels seen in fit; for multilabel targets ``np.arange(L)``,
        the column indices of Y.
    multilabel_ : bool
        Whether the estimator was fit on a multilabel indicator matrix.
    pos_weight_ : ndarray of shape (n_labels,)
        Only for multilabel targets with ``class_weight="balanced"``: the
        weight of each label's positives in the data loss.
    n_features_in_ : int
        Values per sample (``C * H * W``).
    feature_names_in_ : ndarray of str
        Column names, when fit on a DataFrame.
    input_shape_ : tuple of int
        ``(C, H, W)`` the network sees.
    sparsity_ : float
        Fraction of the penalized weights that are exactly zero.
    feature_importances_ : ndarray of shape (n_features,)
        Only when the module's first layer is an ``nn.Linear`` taking the
        flattened inputs: the norms of its weight columns, normalized to sum
        to 1, exactly 0 for the inputs that ``lambda_features`` dropped.
    n_features_selected_ : int
        Number of inputs whose weight column is not zero (same condition).
    n_iter_ : int
        Epochs trained since the network was initialized.
    best_epoch_ : int
        The epoch whose weights the estimator holds: with ``early_stopping``,
        the one with the best validation loss; otherwise the last, ``n_iter_``.
    module_ : torch.nn.Module
        The trained network.
    history_ : skorch.History
        Per epoch: ``train_loss`` (data + l1 + l2 + kl + features),
        ``train_l1``, ``train_l2``, ``train_kl``, ``train_features`` and, with
        a ``train_split`` or ``early_stopping``, ``valid_loss`` (data loss only).

    See Also
    --------
    SoftRegRegressor : the regression counterpart.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sk_softreg import SoftRegCNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = SoftRegCNNClassifier(lambda1=1e-5, alpha=0.1, max_epochs=2,
    ...                            random_state=0, device="cpu")
    >>> clf.fit(X[:200] / 16, y[:200]).predict(X[:3]).shape
    (3,)
    """

    _default_module = SoftRegCNN
    _parameter_constraints = {
        **SoftRegMixin._parameter_constraints,
        "kl": [StrOptions(set(_KL_TERMS))],
        "image_shape": [None, tuple, list],
        "train_transform": [None, callable],
        "class_weight": [StrOptions({"balanced"}), dict, None],
    }

    def __init__(
        self,
        module=None,
        *,
        lambda1=0.0,
        lambda2=0.0,
        lambda_features=0.0,
        alpha=0.0,
        kl="label_smoothing",
        penalize="weights",
        l1_method="proximal",
        image_shape=None,
        train_transform=None,
        class_weight=None,
        random_state=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        scoring="loss",
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=2e-3,
        max_epochs=30,
        batch_size=64,
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
        self.kl = kl
        self.penalize = penalize
        self.l1_method = l1_method
        self.image_shape = image_shape
        self.train_transform = train_transform
        self.class_weight = class_weight
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
            return self._validate_fit_dataset(X, y, reset, classes)
        X = self._check_X(X, reset=reset)
        multilabel = is_label_matrix(y)
        if not reset:
            self._check_target_kind(multilabel)
        if multilabel:
            check_consistent_length(X, y)  # before the fitted label attributes change
            return X, self._validate_label_matrix(y, reset, classes, sample_weight)
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        check_classification_targets(y)
        if reset:
            self._set_classes(y, classes)
        elif classes is not None:
            self._check_same_classes(classes)
        return X, self._encode(y)

    @property
    def _default_callbacks(self):
        # skorch's valid_acc compares predict's labels with the validation targets,
        # which hold class indices here: score the indices instead
        return [
            (name, EpochScoring(_index_accuracy, name="valid_acc", lower_is_better=False))
            if name == "valid_acc" else (name, cb)
            for name, cb in super()._default_callbacks
        ]

    def check_data(self, X, y):
        # classes_ is set from the original labels in fit; skip skorch's
        # inference from the encoded targets.
        NeuralNet.check_data(self, X, y)

    def _inferred_module_kwargs(self):
        return {"input_shape": self.input_shape_, "n_classes": len(self.classes_)}

    def _example_input(self, n):
        return torch.zeros(n, *self.input_shape_)

    def _onnx_graph(self):
        from ._onnx import ProbabilityGraph, cpu_copy

        graph = ProbabilityGraph(cpu_copy(self.module_), self._get_predict_nonlinearity())
        metadata = {
            "classes": self.classes_,
            "input_shape": self.input_shape_,
            "multilabel": bool(self._is_multilabel()),
        }
        return graph, ["probabilities"], metadata

    def __setattr__(self, name, value):
        # torchvision v2 transforms are nn.Modules; skorch would register one
        # as a network component. ``train_transform`` is a plain parameter.
        if name == "train_transform":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def initialize_module(self):
        """Build ``module_``; a string ``module`` names a torchvision model."""
        if not isinstance(self.module, str):
            return super().initialize_module()
        kwargs = self.get_params_for("module")
        for key, value in self._inferred_module_kwargs().items():
            kwargs.setdefault(key, value)
        self.module_ = TorchvisionClassifierNet(self.module, **kwargs)
        return self

    def train_step_single(self, batch, **fit_params):
        """Apply ``train_transform`` to each training image, then skorch's step."""
        if self.train_transform is not None:
            Xi, yi = batch
            Xi, weights = unpack_weights(Xi)
            Xi = torch.stack([self.train_transform(x) for x in torch.as_tensor(Xi)])
            if tuple(Xi.shape[1:]) != tuple(self.input_shape_):
                raise ValueError(
                    f"train_transform must keep the images' shape {tuple(self.input_shape_)} "
                    f"(C, H, W); it made them {tuple(Xi.shape[1:])}. Resize the images "
                    "before fit, and pad a crop back to the shape (v2.RandomCrop(..., "
                    "padding=...)) or use v2.RandomResizedCrop(size=(H, W))."
                )
            batch = (Xi if weights is None else pack_weights(Xi, weights), yi)
        return super().train_step_single(batch, **fit_params)

    def _kl_term(self, y_pred, y_true, X=None):
        if self._is_multilabel():
            return self._multilabel_kl(y_pred)
        return _KL_TERMS[self.kl](y_pred)

    def _data_and_kl(self, y_pred, y_true, X, weights):
        """``CE + α·KL(u‖p)`` through torch's label smoothing, where the identity holds.

        With ``kl="label_smoothing"``, ``CE + α·KL(u‖p) = (1+α)·CE_ε − α·log K``
        for label smoothing ``ε = α/(1+α)`` (see the user guide), so one
        ``cross_entropy`` call gives the value and the gradient; the KL mean
        for history is one pass without gradient. Only for an unweighted batch
        and a plain ``torch.nn.CrossEntropyLoss`` (no class weights, mean
        reduction, no label smoothing of its own) and a 1-D target; otherwise
        the two terms are computed apart.
        """
        criterion = self.criterion_
        if (
            not self.alpha
            or self.kl != "label_smoothing"
            or self._is_multilabel()
            or weights is not None
            or type(criterion) is not torch.nn.CrossEntropyLoss
            or criterion.weight is not None
            or criterion.reduction != "mean"
            or criterion.label_smoothing != 0.0
        ):
            return super()._data_and_kl(y_pred, y_true, X, weights)
        alpha = self.alpha
        smoothed = torch.nn.functional.cross_entropy(
            y_pred,
            to_tensor(y_true, device=self.device),
            ignore_index=criterion.ignore_index,
            label_smoothing=alpha / (1.0 + alpha),
        )
        with torch.no_grad():
            kl = kl_from_uniform(y_pred).mean()
        return (1.0 + alpha) * smoothed - alpha * math.log(y_pred.shape[-1]), kl

    # ------------------------------------------------------------------
    # prediction
    def predict_proba(self, X):
        """Class probabilities: the softmax of the module's logits.

        For multilabel targets (``multilabel_``), each label's probability:
        the sigmoid of its logit, not renormalized across labels.

        Parameters
        ----------
        X : array-like of shape (n, C, H, W), (n, H, W) or (n, F), or a torch Dataset

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            float64 rows that sum to 1, columns ordered as ``classes_``; for
            multilabel targets, one column per label.
        """
        check_is_fitted(self)
        X = unpack_weights(X)[0]  # a weighted fit's packed rows, as skorch's scoring passes them
        # lazy data, and skorch's scoring callbacks pass validation Datasets
        if not is_lazy(X):
            X = self._check_X(X, reset=False)
        else:  # one sample read: the images the network was fitted on
            self._check_same_image_shape(predicted_sample_shape(X, type(self).__name__))
        proba = super().predict_proba(X).astype(np.float64)
        if self._is_multilabel() or self.predict_nonlinearity != "auto":
            return proba  # the user's nonlinearity's outputs, as skorch gives them
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Predicted class labels, drawn from ``classes_``.

        For multilabel targets, the indicator matrix ``predict_proba(X) > 0.5``
        in the dtype of the ``Y`` of fit (as scikit-learn's ``MLPClassifier``).

        Parameters
        ----------
        X : array-like of shape (n, C, H, W), (n, H, W) or (n, F)

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_labels)
        """
        proba = self.predict_proba(X)
        if self._is_multilabel():
            return self._threshold(proba)
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.classifier_tags.multi_label = True
        return tags


def _index_accuracy(net, X, y):
    """Accuracy of the predicted class indices against targets ``y`` that are indices;
    for an ``(n, L)`` indicator ``y``, subset accuracy (every label right)."""
    proba, y = net.predict_proba(X), np.asarray(y)
    if y.ndim == 2:
        return float(np.mean(subset_correct(proba, y)))
    return float(np.mean(np.argmax(proba, axis=1) == y))
