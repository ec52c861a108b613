"""verbose=1 draws a tqdm bar on stderr; verbose=0 prints nothing."""

import io
import pickle
import re

import numpy as np
import pytest
from sklearn.datasets import load_digits
from skorch.dataset import ValidSplit

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor
from sk_softreg._progress import EpochProgressBar


def _digits(n=120):
    X, y = load_digits(return_X_y=True)
    return X[:n] / 16, y[:n]


def test_verbose_1_progress_bar_on_stderr(capsys):
    X, y = _digits()
    clf = SoftRegCNNClassifier(lambda1=1e-4, alpha=0.1, max_epochs=2, verbose=1,
                               random_state=0, device="cpu").fit(X, y)
    out, err = capsys.readouterr()
    assert out == ""  # skorch's table is replaced
    assert "2/2" in err and "loss=" in err and "l1=" in err and "kl=" in err
    assert "progress" in dict(clf.callbacks_)
    assert "print_log" not in dict(clf.callbacks_)


def test_batch_bar_on_long_epochs(capsys):
    X, y = _digits()
    SoftRegCNNClassifier(max_epochs=1, batch_size=16, verbose=1, random_state=0,
                         callbacks__progress__min_batches=5, device="cpu").fit(X, y)
    _, err = capsys.readouterr()
    assert "batches" in err and "/8 " in err
    SoftRegCNNClassifier(max_epochs=1, batch_size=16, verbose=1, random_state=0,
                         device="cpu").fit(X, y)
    _, err = capsys.readouterr()
    assert "batches" not in err  # 8 batches < 50: no batch bar


def test_verbose_0_prints_nothing(capsys):
    X, y = _digits()
    clf = SoftRegCNNClassifier(max_epochs=1, random_state=0, device="cpu").fit(X, y)
    SoftRegRegressor(max_epochs=1, random_state=0, device="cpu").fit(X, y.astype(float))
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert "progress" not in dict(clf.callbacks_)


def test_verbose_2_keeps_the_table_and_pickles(capsys):
    X, y = _digits()
    reg = SoftRegRegressor(max_epochs=1, verbose=2, random_state=0, device="cpu")
    reg.fit(X, y.astype(float))
    out, err = capsys.readouterr()
    assert "train_loss" in out and "1/1" in err
    restored = pickle.loads(pickle.dumps(reg))
    np.testing.assert_allclose(restored.predict(X), reg.predict(X), rtol=1e-6)


class _Recording(EpochProgressBar):
    """Records ``(total, n)`` of each batch bar as it is closed."""

    def initialize(self):
        super().initialize()
        self.closed = []
        return self

    def _close_batch_bar(self):
        if getattr(self, "batch_bar_", None) is not None:
            self.closed.append((self.batch_bar_.total, self.batch_bar_.n))
        super()._close_batch_bar()


def _rows(n=100, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, 4)
    return X, X @ [1.0, -1.0, 0.5, 0.0]


def test_default_batch_bar_from_50_batches_closed_each_epoch():
    X, y = _rows(100)
    bar = _Recording(file=io.StringIO())
    SoftRegRegressor(max_epochs=2, batch_size=2, train_split=None, callbacks=[bar],
                     random_state=0, device="cpu").fit(X, y)
    assert bar.min_batches == 50
    assert bar.closed == [(50, 50), (50, 50)]  # 50 batches >= min_batches: a bar per epoch
    bar = _Recording(file=io.StringIO())
    SoftRegRegressor(max_epochs=1, batch_size=3, train_split=None, callbacks=[bar],
                     random_state=0, device="cpu").fit(X[:98], y[:98])
    assert bar.closed == []  # 33 batches


def test_batch_bar_counts_training_batches_and_epoch_bar_shows_valid_loss():
    X, y = _rows(40)
    out = io.StringIO()
    bar = _Recording(min_batches=1, file=out)
    SoftRegRegressor(max_epochs=2, batch_size=4, train_split=ValidSplit(0.5, random_state=0),
                     callbacks=[bar], random_state=0, device="cpu").fit(X, y)
    assert bar.closed == [(5, 5), (5, 5)]  # the 5 validation batches are not counted
    text = out.getvalue()
    assert "valid_loss=" in text and "train_" not in text
    assert re.search(r"(?<!\w)loss=", text) and re.search(r"(?<!\w)kl=", text)


def test_batch_size_minus_one_is_one_batch():
    X, y = _rows(40)
    bar = _Recording(min_batches=1, file=io.StringIO())
    SoftRegRegressor(max_epochs=1, batch_size=-1, train_split=None, callbacks=[bar],
                     random_state=0, device="cpu").fit(X, y)
    assert bar.closed == [(1, 1)]


@pytest.mark.parametrize("drop_last, expected", [(False, 15), (True, 14)])
def test_batch_bar_counts_the_batches_the_loader_gives(drop_last, expected):
    """With ``drop_last`` the last, partial batch is not trained on, nor counted."""
    X, y = _rows(100)
    bar = _Recording(min_batches=1, file=io.StringIO())
    SoftRegRegressor(max_epochs=1, batch_size=7, iterator_train__drop_last=drop_last,
                     train_split=None, callbacks=[bar], random_state=0, device="cpu").fit(X, y)
    assert bar.closed == [(expected, expected)]


def test_open_bars_are_not_pickled():
    bar = EpochProgressBar(file=io.StringIO()).initialize()
    bar.bar_ = bar._tqdm(total=3)
    bar.batch_bar_ = bar._tqdm(total=5)
    restored = pickle.loads(pickle.dumps(bar))
    assert restored.bar_ is None and restored.batch_bar_ is None
    assert bar.bar_ is not None  # the bar being drawn is left open
    bar.on_train_end(None)
    assert bar.bar_ is None and bar.batch_bar_ is None
