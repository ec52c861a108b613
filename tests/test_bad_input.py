"""Every bad input gives a clear error that names the problem.

One parametrized case per bad input of issue 4; scikit-learn's wording where
scikit-learn has one (``validate_data`` / ``check_array`` / parameter
validation).
"""

import re

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor

FAST = {"max_epochs": 1, "batch_size": 32, "device": "cpu", "random_state": 0}
TINY_CNN = {"module__channels": (4, 8), "module__hidden_units": 16}
_rng = np.random.RandomState(0)
X_IMG = _rng.rand(20, 16).astype(np.float32)  # 4x4 images, flattened
Y_CLS = np.arange(20) % 2
X_TAB = _rng.rand(20, 3)
Y_REG = _rng.rand(20)


def clf(**kw):
    return SoftRegCNNClassifier(**{**FAST, **TINY_CNN, **kw})


def reg(**kw):
    return SoftRegRegressor(**{**FAST, **kw})


def _with(arr, index, value):
    arr = np.array(arr, dtype=np.float64)
    arr[index] = value
    return arr


@pytest.fixture(scope="module")
def fitted():
    return {
        "clf": clf().fit(X_IMG, Y_CLS),
        "clf_img": clf().fit(X_IMG.reshape(20, 1, 4, 4), Y_CLS),
        "reg": reg().fit(X_TAB, Y_REG),
    }


# (id, callable, exception type, regex the message must match)
FIT_CASES = [
    # NaN / inf in X and y
    ("clf-nan-X", lambda: clf().fit(_with(X_IMG, (0, 0), np.nan), Y_CLS), ValueError, "Input X contains NaN"),
    ("clf-inf-X", lambda: clf().fit(_with(X_IMG, (0, 0), np.inf), Y_CLS), ValueError, "Input X contains infinity"),
    ("reg-nan-X", lambda: reg().fit(_with(X_TAB, (1, 2), np.nan), Y_REG), ValueError, "Input X contains NaN"),
    ("reg-inf-X", lambda: reg().fit(_with(X_TAB, (1, 2), -np.inf), Y_REG), ValueError, "Input X contains infinity"),
    # finite in float64, infinite in the networks' float32
    ("clf-X-beyond-float32", lambda: clf().fit(_with(X_IMG, (0, 0), 1e39), Y_CLS), ValueError, "Input X contains infinity or a value too large for dtype\\('float32'\\)"),
    ("clf-4d-X-beyond-float32", lambda: clf().fit(_with(X_IMG, (0, 0), -1e39).reshape(20, 1, 4, 4), Y_CLS), ValueError, "Input X contains infinity or a value too large for dtype\\('float32'\\)"),
    ("reg-X-beyond-float32", lambda: reg().fit(_with(X_TAB, (1, 2), 1e39), Y_REG), ValueError, "Input X contains infinity or a value too large for dtype\\('float32'\\)"),
    ("clf-nan-y", lambda: clf().fit(X_IMG, _with(Y_CLS, 0, np.nan)), ValueError, "Input y contains NaN"),
    ("clf-inf-y", lambda: clf().fit(X_IMG, _with(Y_CLS, 0, np.inf)), ValueError, "Input y contains infinity"),
    ("reg-nan-y", lambda: reg().fit(X_TAB, _with(Y_REG, 0, np.nan)), ValueError, "Input y contains NaN"),
    ("reg-inf-y", lambda: reg().fit(X_TAB, _with(Y_REG, 0, np.inf)), ValueError, "Input y contains infinity"),
    # shapes
    ("clf-empty-X", lambda: clf().fit(np.empty((0, 16)), []), ValueError, r"0 sample\(s\)"),
    ("reg-empty-X", lambda: reg().fit(np.empty((0, 3)), []), ValueError, r"0 sample\(s\)"),
    ("clf-0-features", lambda: clf().fit(np.empty((20, 0)), Y_CLS), ValueError, r"0 feature\(s\)"),
    ("clf-0-features-4d", lambda: clf().fit(np.empty((20, 1, 0, 4)), Y_CLS), ValueError, r"0 feature\(s\)"),
    ("clf-0-channels-4d", lambda: clf().fit(np.empty((20, 0, 4, 4)), Y_CLS), ValueError, r"0 feature\(s\)"),
    ("reg-0-features", lambda: reg().fit(np.empty((20, 0)), Y_REG), ValueError, r"0 feature\(s\)"),
    ("clf-1d-X", lambda: clf().fit(X_IMG[:, 0], Y_CLS), ValueError, "Expected 2D array, got 1D array"),
    ("reg-1d-X", lambda: reg().fit(X_TAB[:, 0], Y_REG), ValueError, "Expected 2D array, got 1D array"),
    ("clf-5d-X", lambda: clf().fit(X_IMG.reshape(20, 1, 1, 4, 4), Y_CLS), ValueError, "Found array with dim 5.*expected <= 4"),
    ("reg-5d-X", lambda: reg().fit(X_TAB.reshape(20, 3, 1, 1, 1), Y_REG), ValueError, "Found array with dim 5"),
    ("reg-3d-X", lambda: reg().fit(X_TAB.reshape(20, 3, 1), Y_REG), ValueError, "Found array with dim 3"),
    # sparse, strings, objects
    ("clf-sparse-X", lambda: clf().fit(sp.csr_matrix(X_IMG), Y_CLS), TypeError, "Sparse data was passed.*dense data is required"),
    ("reg-sparse-X", lambda: reg().fit(sp.csr_matrix(X_TAB), Y_REG), TypeError, "Sparse data was passed.*dense data is required"),
    ("clf-str-X", lambda: clf().fit(np.full((20, 16), "a"), Y_CLS), ValueError, "could not convert string to float"),
    ("reg-str-X", lambda: reg().fit(np.full((20, 3), "a"), Y_REG), ValueError, "could not convert string to float"),
    ("reg-object-X", lambda: reg().fit(np.array([[object()] * 3] * 20), Y_REG), TypeError, "float"),
    ("reg-str-y", lambda: reg().fit(X_TAB, np.full(20, "a")), ValueError, "could not convert string to float|numeric"),
    # lengths and targets
    ("clf-len-mismatch", lambda: clf().fit(X_IMG, Y_CLS[:-1]), ValueError, r"inconsistent numbers of samples: \[20, 19\]"),
    ("reg-len-mismatch", lambda: reg().fit(X_TAB, Y_REG[:-1]), ValueError, r"inconsistent numbers of samples: \[20, 19\]"),
    ("clf-one-class", lambda: clf().fit(X_IMG, np.zeros(20, dtype=int)), ValueError, "at least 2 classes.*only one class"),
    ("clf-continuous-y", lambda: clf().fit(X_IMG, Y_REG), ValueError, "Unknown label type: continuous"),
    ("reg-y-wrong-outputs-partial", lambda: reg().fit(X_TAB, Y_REG).partial_fit(X_TAB, np.c_[Y_REG, Y_REG]), ValueError, "y has 2 outputs.*fitted with 1"),
    # image_shape
    ("clf-image-shape-size", lambda: clf(image_shape=(3, 3)).fit(X_IMG, Y_CLS), ValueError, r"image_shape=\(3, 3\) holds 9 values per sample, but X has 16 features"),
    ("clf-image-shape-4d", lambda: clf(image_shape=(1, 3, 3)).fit(X_IMG.reshape(20, 1, 4, 4), Y_CLS), ValueError, r"image_shape=\(1, 3, 3\) does not match"),
    ("clf-image-shape-nonpositive", lambda: clf(image_shape=(0, 16)).fit(X_IMG, Y_CLS), InvalidParameterError, "'image_shape' parameter"),
    ("clf-image-shape-4-values", lambda: clf(image_shape=(1, 1, 4, 4)).fit(X_IMG, Y_CLS), InvalidParameterError, "'image_shape' parameter"),
    ("clf-image-shape-str", lambda: clf(image_shape="4x4").fit(X_IMG, Y_CLS), InvalidParameterError, "'image_shape' parameter"),
    # devices
    ("clf-device-unknown", lambda: clf(device="gpu").fit(X_IMG, Y_CLS), InvalidParameterError, "'device' parameter.*Got 'gpu'"),
    ("reg-device-unknown", lambda: reg(device="cuda:x").fit(X_TAB, Y_REG), InvalidParameterError, "'device' parameter.*Got 'cuda:x'"),
    ("reg-device-float", lambda: reg(device=1.5).fit(X_TAB, Y_REG), InvalidParameterError, "'device' parameter"),
]

# negative, NaN, inf or str value for every penalty weight
for _est, _make, _X, _y, _names in [
    ("clf", clf, X_IMG, Y_CLS, ("lambda1", "lambda2", "alpha")),
    ("reg", reg, X_TAB, Y_REG, ("lambda1", "lambda2", "alpha", "tau")),
]:
    for _name in _names:
        for _value in (-1.0, np.nan, np.inf, "0.1"):
            FIT_CASES.append((
                f"{_est}-{_name}={_value}",
                (lambda m=_make, n=_name, v=_value, X=_X, y=_y: m(**{n: v}).fit(X, y)),
                InvalidParameterError,
                rf"The '{_name}' parameter of \w+ must be a float in the range",
            ))
FIT_CASES.append(("reg-tau=0", lambda: reg(tau=0.0).fit(X_TAB, Y_REG), InvalidParameterError, r"'tau' parameter.*\(0.0, inf\)"))

# unknown strings for the string options
for _name in ("kl", "penalize", "l1_method"):
    FIT_CASES.append((
        f"clf-{_name}-unknown",
        (lambda n=_name: clf(**{n: "bogus"}).fit(X_IMG, Y_CLS)),
        InvalidParameterError,
        rf"The '{_name}' parameter of SoftRegCNNClassifier must be a str among .*Got 'bogus'",
    ))
for _name in ("penalize", "l1_method"):
    FIT_CASES.append((
        f"reg-{_name}-unknown",
        (lambda n=_name: reg(**{n: "bogus"}).fit(X_TAB, Y_REG)),
        InvalidParameterError,
        rf"The '{_name}' parameter of SoftRegRegressor must be a str among .*Got 'bogus'",
    ))


@pytest.mark.parametrize(
    "call, exc, match", [c[1:] for c in FIT_CASES], ids=[c[0] for c in FIT_CASES]
)
def test_bad_fit_input(call, exc, match):
    with pytest.raises(exc, match=re.compile(match, re.DOTALL)):
        call()


PREDICT_CASES = [
    ("clf-features", "clf", "predict", lambda: X_IMG[:, :9], ValueError, "X has 9 features, but SoftRegCNNClassifier is expecting 16 features"),
    ("clf-image-shape", "clf_img", "predict", lambda: X_IMG.reshape(20, 1, 2, 8), ValueError, r"images of shape \(1, 2, 8\).*fitted on images of shape \(1, 4, 4\)"),
    ("clf-image-3d-shape", "clf_img", "predict_proba", lambda: X_IMG.reshape(20, 2, 8), ValueError, r"images of shape \(1, 2, 8\)"),
    ("clf-flat-vs-images", "clf_img", "predict", lambda: X_IMG[:, :15], ValueError, "X has 15 features"),
    ("reg-features", "reg", "predict", lambda: X_TAB[:, :2], ValueError, "X has 2 features, but SoftRegRegressor is expecting 3 features"),
    ("clf-nan", "clf", "predict", lambda: _with(X_IMG, (3, 3), np.nan), ValueError, "Input X contains NaN"),
    ("reg-inf", "reg", "predict", lambda: _with(X_TAB, (3, 1), np.inf), ValueError, "Input X contains infinity"),
    ("clf-beyond-float32", "clf", "predict_proba", lambda: _with(X_IMG, (3, 3), 1e39), ValueError, "Input X contains infinity or a value too large for dtype\\('float32'\\)"),
    ("reg-beyond-float32", "reg", "predict", lambda: _with(X_TAB, (3, 1), -1e39), ValueError, "Input X contains infinity or a value too large for dtype\\('float32'\\)"),
    ("clf-sparse", "clf", "predict_proba", lambda: sp.csr_matrix(X_IMG), TypeError, "Sparse data was passed"),
    ("reg-1d", "reg", "predict", lambda: X_TAB[:, 0], ValueError, "Expected 2D array"),
    ("clf-5d", "clf_img", "predict", lambda: X_IMG.reshape(20, 1, 1, 4, 4), ValueError, "Found array with dim 5"),
]


@pytest.mark.parametrize(
    "key, method, make_X, exc, match", [c[1:] for c in PREDICT_CASES], ids=[c[0] for c in PREDICT_CASES]
)
def test_bad_predict_input(fitted, key, method, make_X, exc, match):
    with pytest.raises(exc, match=re.compile(match, re.DOTALL)):
        getattr(fitted[key], method)(make_X())


@pytest.mark.parametrize(
    "est, method, X",
    [
        (SoftRegCNNClassifier, "predict", X_IMG),
        (SoftRegCNNClassifier, "predict_proba", X_IMG),
        (SoftRegRegressor, "predict", X_TAB),
    ],
)
def test_predict_before_fit(est, method, X):
    with pytest.raises(NotFittedError, match=f"This {est.__name__} instance is not fitted yet"):
        getattr(est(), method)(X)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 1)])
@pytest.mark.parametrize("make, X, y", [(clf, X_IMG, Y_CLS), (reg, X_TAB, Y_REG)])
def test_cuda_without_cuda_fails_clearly_at_fit(make, X, y, device):
    est = make(device=device)  # construction never fails
    with pytest.raises(ValueError, match="CUDA is not available on this machine.*device='cpu'"):
        est.fit(X, y)


def test_cuda_without_cuda_simulated(monkeypatch):
    # the same check on any machine: pretend CUDA is missing
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        reg(device="cuda").fit(X_TAB, Y_REG)

