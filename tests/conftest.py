import numpy as np
import pytest
import sklearn.datasets
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import sk_softreg._demo
from sk_softreg import _numba_loops


@pytest.fixture(scope="session")
def digits():
    """Digits scaled to [0, 1]: X of shape (1797, 64), y in 0..9."""
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float64), y


@pytest.fixture(scope="session")
def small_digits(digits):
    """300 digits: enough for shape and API tests, fast to fit."""
    X, y = digits
    return X[:300], y[:300]


@pytest.fixture(scope="session")
def regression_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.1 * rng.normal(size=200) + 10.0
    return X, y


@pytest.fixture(scope="session")
def digits200():
    """The first 200 digits as float32 in [0, 1] (Accelerate and Dataset-input tests)."""
    X, y = load_digits(return_X_y=True)
    return (X[:200] / 16.0).astype(np.float32), y[:200]


@pytest.fixture
def torch_kernels(monkeypatch):
    """Run without numba's compiled loops (sk_softreg._numba_loops), as where numba is not
    installed."""
    monkeypatch.setattr(_numba_loops, "_kernels", False)


@pytest.fixture
def shrink_digits(monkeypatch):
    """``shrink_digits(n)``: ``load_digits(return_X_y=True)`` gives ``n`` images, stratified.

    For code that loads digits itself (the docs' examples, the scripts in ``examples/``,
    ``sk_softreg._demo``), so that its searches run in seconds.
    """

    def shrink(n):
        def load_small(*args, **kwargs):
            data = load_digits(*args, **kwargs)
            if not isinstance(data, tuple):
                return data
            X, _, y, _ = train_test_split(*data, train_size=n, stratify=data[1], random_state=0)
            return X, y

        monkeypatch.setattr(sklearn.datasets, "load_digits", load_small)
        monkeypatch.setattr(sk_softreg._demo, "load_digits", load_small)

    return shrink
