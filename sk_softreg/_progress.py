"""A tqdm progress bar over epochs (and batches of long epochs), on stderr."""

import math
import sys

from skorch.callbacks import Callback

__all__ = ["EpochProgressBar"]

_TERMS = ("train_loss", "train_l1", "train_l2", "train_kl", "valid_loss")


class EpochProgressBar(Callback):
    """Show training progress with tqdm, the loss and penalty terms on the bar.

    The estimators add it (as ``"progress"``) when ``verbose >= 1``, in place
    of skorch's epoch table (kept too when ``verbose >= 2``).

    Parameters
    ----------
    min_batches : int, default=50
        Epochs of at least this many training batches also get a bar over
        their batches (removed when the epoch ends).
    file : file-like or None, default=None
        Where to draw; ``None`` is ``sys.stderr`` at the time of training.

    Examples
    --------
    >>> from sk_softreg._progress import EpochProgressBar
    >>> bar = EpochProgressBar(min_batches=10)
    """

    def __init__(self, min_batches=50, file=None):
        self.min_batches = min_batches
        self.file = file

    def initialize(self):
        self.bar_ = None
        self.batch_bar_ = None
        return self

    def _tqdm(self, **kwargs):
        from tqdm.auto import tqdm

        return tqdm(file=self.file if self.file is not None else sys.stderr, **kwargs)

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.bar_ = self._tqdm(total=net.max_epochs, desc=type(net).__name__, unit="epoch")

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        params = net.get_params_for("iterator_train")
        batch_size = params.get("batch_size", net.batch_size)
        n_batches = _n_batches(dataset_train, batch_size, params.get("drop_last", False))
        if n_batches is not None and n_batches >= self.min_batches:
            self.batch_bar_ = self._tqdm(total=n_batches, desc="batches", leave=False, position=1)

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if training and self.batch_bar_ is not None:
            self.batch_bar_.update(1)
            self.batch_bar_.set_postfix(
                loss=f"{net.history[-1, 'batches', -1, 'train_loss']:.4g}", refresh=False
            )

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self._close_batch_bar()
        if self.bar_ is None:
            return
        row = net.history[-1]
        self.bar_.set_postfix(
            {name.replace("train_", ""): f"{row[name]:.4g}" for name in _TERMS if name in row},
            refresh=False,
        )
        self.bar_.update(1)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        self._close_batch_bar()
        if self.bar_ is not None:
            self.bar_.close()
            self.bar_ = None

    def _close_batch_bar(self):
        if getattr(self, "batch_bar_", None) is not None:
            self.batch_bar_.close()
            self.batch_bar_ = None

    def __getstate__(self):
        # an open tqdm bar (training interrupted) does not pickle
        state = self.__dict__.copy()
        state["bar_"] = state["batch_bar_"] = None
        return state


def _n_batches(dataset, batch_size, drop_last=False):
    """The number of training batches of an epoch over ``dataset``, as a DataLoader
    counts them (None for a dataset without a length)."""
    try:
        n = len(dataset)
    except TypeError:
        return None
    if batch_size is None or batch_size == -1:
        return 1
    return n // batch_size if drop_last else math.ceil(n / batch_size)
