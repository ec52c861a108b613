"""The held-out rows of a fit: early stopping's split, a validation set of the
user's own, and the scores on them.

The training set holds encoded targets (the classifier's class indices, the
regressor's standardized y), while ``predict`` and the scorers work in the
user's labels and units. :class:`HeldOutMixin` keeps the two apart: it encodes
a validation set of the user's own (``_encode_targets``), decodes the targets a
scorer sees (``_user_targets``), and hands a user's skorch scoring callbacks
targets in the user's units during training.
"""

import numbers
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.base import is_classifier
from sklearn.metrics import check_scoring
from sklearn.utils import check_random_state
from skorch.callbacks import BatchScoring, EpochScoring
from skorch.dataset import Dataset, ValidSplit
from skorch.utils import data_from_dataset, to_numpy
from torch.utils.data import Subset

from ._batching import unpack_weights
from ._validation import TargetsEncoded

__all__ = ["HeldOutMixin"]


class _UserTargets:
    """A scoring callback's ``target_extractor``: encoded training targets in the
    user's labels or units (``net._user_targets``)."""

    def __init__(self, net):
        self.net = net

    def __call__(self, y):
        return self.net._user_targets(to_numpy(y))


class HeldOutMixin:
    """Early stopping's split and scores, for :class:`~sk_softreg._base.SoftRegMixin`.

    Subclasses provide ``_encode_targets`` (the user's targets to the training
    set's) and, where the two differ, ``_user_targets`` (back again).
    """

    def _validation_scorer(self):
        """The scorer of ``scoring``; None for ``"loss"``."""
        if isinstance(self.scoring, str) and self.scoring == "loss":
            return None
        return check_scoring(self, scoring=self.scoring)

    # ------------------------------------------------------------------
    # the split
    def get_split_datasets(self, X, y=None, **fit_params):
        """skorch's split; with ``early_stopping`` and no ``train_split``, hold out
        ``validation_fraction`` of the data (stratified where ``_stratified_split`` says)."""
        if not (self._early_stopping_active() and self.train_split is None):
            dataset_train, dataset_valid = super().get_split_datasets(X, y, **fit_params)
            return self._held_out(dataset_train, self._encoded_validation(dataset_train,
                                                                          dataset_valid))
        random_state = self.random_state
        if random_state is not None and not isinstance(random_state, numbers.Integral):
            random_state = check_random_state(random_state)
        split = ValidSplit(
            float(self.validation_fraction),
            stratified=self._stratified_split(y),
            random_state=random_state,
        )
        dataset_train, dataset_valid = split(self.get_dataset(X, y), y, **fit_params)
        if len(dataset_valid) < 2:
            raise ValueError(
                f"The validation set is too small ({len(dataset_valid)} sample(s)). Increase "
                "'validation_fraction' or the size of your dataset."
            )
        return self._held_out(dataset_train, dataset_valid)

    def _encoded_validation(self, dataset_train, dataset_valid):
        """A validation set of the user's own with its targets encoded as the training set's.

        The training set holds encoded targets (the classifier's class indices,
        the regressor's standardized y). A validation set of the user's own
        (``train_split=predefined_split(valid_ds)``) holds them in the user's labels
        or units, as for ``fit``: they are encoded with :meth:`_encode_targets`. A
        split of the training set itself (skorch's ``ValidSplit``: subsets of one
        data set) is left as it is.
        """
        if dataset_valid is None:
            return None
        source = getattr(dataset_train, "dataset", dataset_train)
        if isinstance(dataset_valid, Subset) and dataset_valid.dataset is source:
            return dataset_valid
        if isinstance(dataset_valid, Dataset) and dataset_valid.y is not None:
            return Dataset(dataset_valid.X, self._encode_targets(dataset_valid.y))
        return TargetsEncoded(dataset_valid, self._encode_targets)

    def _encode_targets(self, y):
        """Targets in the user's labels or units, encoded as ``fit`` encodes its y."""
        raise NotImplementedError

    def _held_out(self, dataset_train, dataset_valid):
        """Keep the fit's validation set for ``_after_fit``; return both sets."""
        state = getattr(self, "_fit_state", None)
        if state is not None:
            state.dataset_valid = dataset_valid
        return dataset_train, dataset_valid

    def _stratified_split(self, y):
        """Whether the early-stopping split stratifies by ``y``: for a classifier's labels."""
        return is_classifier(self) and y is not None

    def _early_stopping_active(self):
        """Whether this fit holds out ``validation_fraction`` and stops early.

        ``early_stopping`` as a bool; subclasses may resolve other values.
        """
        return bool(self.early_stopping)

    def _validation_data(self, dataset):
        """``(X, y, sample_weight)`` of a validation ``Dataset`` for the scorer: y in the
        user's labels or units (``_user_targets``), sample_weight None if unweighted."""
        try:
            X, y = data_from_dataset(dataset)
        except AttributeError:  # a Dataset of the user's: predict takes it as it is
            return dataset, self._user_targets(np.asarray([dataset[i][1] for i in range(len(dataset))])), None
        X, weights = unpack_weights(X)
        weights = None if weights is None else to_numpy(weights)
        return X, self._user_targets(to_numpy(y)), weights

    def _user_targets(self, y):
        """Training targets (as the module's loss sees them) in the user's labels or units."""
        return y

    def _validation_score(self, X, y, sample_weight):
        """``scoring`` on the validation data (``sample_weight`` passed when not None).

        Under a forked torch RNG: predicting may draw from it (a ``DataLoader``
        draws a seed), and the training run must not depend on the scoring.
        The validation rows come from the training X, as arrays: scikit-learn's
        warning that they lack the feature names of a DataFrame X is silenced.
        """
        scorer = self._validation_scorer()
        kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
        with torch.random.fork_rng(devices=self._cuda_devices()), warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="X does not have valid feature names", category=UserWarning
            )
            return float(scorer(self, X, y, **kwargs))

    @contextmanager
    def _scoring_in_user_targets(self):
        """Within: the user's skorch ``EpochScoring`` / ``BatchScoring`` callbacks with
        skorch's default ``target_extractor`` get :class:`_UserTargets`.

        Training targets are encoded (class indices, standardized y) while ``predict``
        answers in the user's labels and units; so their scorers compare like with
        like, as in plain skorch. The estimator's own callbacks score the encoded
        targets themselves.
        """
        own = {name for name, _ in self._default_callbacks}
        scorers = [
            callback for name, callback in getattr(self, "callbacks_", [])
            if name not in own
            and isinstance(callback, (EpochScoring, BatchScoring))
            and callback.target_extractor is to_numpy
        ]
        for callback in scorers:
            callback.target_extractor = _UserTargets(self)
        try:
            yield
        finally:
            for callback in scorers:
                callback.target_extractor = to_numpy
