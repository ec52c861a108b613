import numpy as np
import pytest
from sklearn.datasets import load_digits

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
