"""verbose=1 draws a tqdm bar on stderr; verbose=0 prints nothing."""

import numpy as np
from sklearn.datasets import load_digits

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor


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
    import pickle

    X, y = _digits()
    reg = SoftRegRegressor(max_epochs=1, verbose=2, random_state=0, device="cpu")
    reg.fit(X, y.astype(float))
    out, err = capsys.readouterr()
    assert "train_loss" in out and "1/1" in err
    restored = pickle.loads(pickle.dumps(reg))
    np.testing.assert_allclose(restored.predict(X), reg.predict(X), rtol=1e-6)
