"""CUDA against the CPU: the same seeded fit on both devices, the fast path, the RNG,
pickles, the safe format and ONNX export of a model trained on the GPU.

Every test needs a CUDA device and skips without one; every name contains "cuda", so
``pytest -k cuda`` selects them. TF32 is off where the CPU and the GPU are compared:
with it, CUDA matmuls and convolutions round their inputs to 10 mantissa bits.
"""

import pickle
import warnings

import numpy as np
import pytest
import skorch
import skorch.dataset
import torch
from sklearn.model_selection import GridSearchCV, KFold
from skorch.callbacks import Callback

import sk_softreg
from sk_softreg import BatchedGridSearchCV, SoftRegCNNClassifier, SoftRegRegressor
from sk_softreg._batching import TensorBatches
from sk_softreg.model_selection import StackingFallbackWarning

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# Any iterator option outside batch_size/shuffle/drop_last selects skorch's DataLoader.
FORCE_DATALOADER = {"iterator_train__num_workers": 0, "iterator_valid__num_workers": 0}
COMMON = {"lambda2": 1e-4, "alpha": 0.1, "max_epochs": 3, "batch_size": 32, "random_state": 0,
          "early_stopping": False}
# lambda1 is large enough that the proximal step leaves exact zeros within 3 epochs
# (sparsity_ about 0.6 for the classifier, 0.15 for the regressor on the CPU, with and
# without sample weights), and the classifier learns (lr=1e-2: about half the digits
# right after 3 epochs), so the outputs compared are not uniform
CLASSIFIER = {**COMMON, "lambda1": 1e-5, "lr": 1e-2, "module__channels": (4, 8),
              "module__hidden_units": 16, "module__dropout": 0.0}
REGRESSOR = {**COMMON, "lambda1": 1e-2, "module__dropout": 0.0}
HISTORY_TERMS = ("train_loss", "train_l1", "train_l2", "train_kl")


@pytest.fixture
def no_tf32():
    """float32 matmuls and convolutions in full precision on CUDA; restored after."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


@pytest.fixture
def deterministic_cudnn():
    """cuDNN's deterministic convolution algorithms, so two CUDA fits can be compared
    closely; restored after."""
    deterministic, benchmark = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = benchmark


def _make(kind, **kw):
    if kind == "clf":
        return SoftRegCNNClassifier(**{**CLASSIFIER, **kw})
    return SoftRegRegressor(**{**REGRESSOR, **kw})


@pytest.fixture(scope="module")
def data(digits, regression_data):
    X, y = digits
    return {"clf": (X[:600].astype(np.float32), y[:600]), "reg": regression_data}


def _outputs(est, X):
    if isinstance(est, SoftRegCNNClassifier):
        return [est.predict_proba(X)]
    return list(est.predict(X, return_std=True))


def _weights(n):
    return np.random.RandomState(0).uniform(0.2, 2.0, size=n)


def _assert_close_outputs(actual, expected, atol):
    for a, b in zip(actual, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_cuda_fit_matches_cpu_fit(no_tf32, data, kind, weighted):
    X, y = data[kind]
    fit_kw = {"sample_weight": _weights(len(X))} if weighted else {}
    cpu = _make(kind, device="cpu").fit(X, y, **fit_kw)
    gpu = _make(kind, device="cuda").fit(X, y, **fit_kw)
    assert next(gpu.module_.parameters()).is_cuda
    assert len(gpu.history) == len(cpu.history) == COMMON["max_epochs"]
    for key in HISTORY_TERMS:
        assert all(v > 0 for v in cpu.history[:, key]), key  # every term is active
        np.testing.assert_allclose(gpu.history[:, key], cpu.history[:, key], rtol=1e-4,
                                   err_msg=key)
    if kind == "clf":
        _assert_close_outputs(_outputs(gpu, X), _outputs(cpu, X), atol=1e-4)
    else:  # in y's units (std about 3.7): relative as well
        for a, b in zip(_outputs(gpu, X), _outputs(cpu, X)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert cpu.sparsity_ > 0
    assert gpu.sparsity_ > 0
    assert gpu.sparsity_ == pytest.approx(cpu.sparsity_, abs=0.01)


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_cuda_fast_path_matches_dataloader(no_tf32, deterministic_cudnn, data, kind):
    X, y = data[kind]
    fast = _make(kind, device="cuda").fit(X, y)
    loader = _make(kind, device="cuda", **FORCE_DATALOADER).fit(X, y)
    # the two fits really took different paths
    dataset = skorch.dataset.Dataset(np.zeros((8, 3), np.float32), np.zeros(8, np.float32))
    assert isinstance(fast.get_iterator(dataset, training=True), TensorBatches)
    assert isinstance(loader.get_iterator(dataset, training=True), torch.utils.data.DataLoader)
    for key in HISTORY_TERMS:
        np.testing.assert_allclose(loader.history[:, key], fast.history[:, key], rtol=1e-6)
    _assert_close_outputs(_outputs(loader, X), _outputs(fast, X), atol=1e-6)
    assert fast.sparsity_ > 0
    assert loader.sparsity_ == pytest.approx(fast.sparsity_, abs=1e-3)


class _CudaRngAtTrainEnd(Callback):
    """Records the global CUDA RNG state at the end of training, inside the fit."""

    def on_train_end(self, net, X=None, y=None, **kwargs):
        self.state = torch.cuda.get_rng_state()


def test_cuda_seeded_fit_restores_the_global_cuda_rng(regression_data):
    X, y = regression_data
    torch.cuda.manual_seed(1234)
    torch.manual_seed(1234)
    before_cuda, before_cpu = torch.cuda.get_rng_state(), torch.get_rng_state()
    recorder = _CudaRngAtTrainEnd()
    # the default module's dropout (0.5 at 200 rows) draws from the CUDA generator
    est = SoftRegRegressor(max_epochs=2, batch_size=32, random_state=0, device="cuda",
                           callbacks=[("rng", recorder)]).fit(X, y)
    assert est.module_.body[-1].p > 0  # dropout on: the fit consumed CUDA random numbers
    # inside the fit the CUDA generator was reseeded and advanced ...
    assert not torch.equal(recorder.state, before_cuda)
    # ... and the caller's streams are as they were
    assert torch.equal(torch.cuda.get_rng_state(), before_cuda)
    assert torch.equal(torch.get_rng_state(), before_cpu)
    # the same seed gives the same CUDA fit, whatever the caller's RNG state
    torch.cuda.manual_seed(99)
    again = SoftRegRegressor(max_epochs=2, batch_size=32, random_state=0, device="cuda").fit(X, y)
    np.testing.assert_allclose(again.predict(X), est.predict(X), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_cuda_pickle_loads_without_cuda(monkeypatch, data, kind):
    X, y = data[kind]
    est = _make(kind, device="cuda").fit(X, y)
    expected = _outputs(est, X)
    blob = pickle.dumps(est)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(skorch.exceptions.DeviceWarning):
        loaded = pickle.loads(blob)
    assert loaded.device == "cpu" and loaded.get_params()["device"] == "cpu"
    assert all(p.device.type == "cpu" for p in loaded.module_.parameters())
    _assert_close_outputs(_outputs(loaded, X), expected, atol=1e-5)
    assert loaded.sparsity_ == est.sparsity_


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_cuda_model_save_and_load(tmp_path, data, kind):
    X, y = data[kind]
    est = _make(kind, device="cuda").fit(X, y)
    path = tmp_path / "m.safetensors"
    est.save(path)
    expected = _outputs(est, X)
    on_gpu = sk_softreg.load(path)
    assert on_gpu.get_params()["device"] == "cuda"
    assert all(p.is_cuda for p in on_gpu.module_.parameters())
    _assert_close_outputs(_outputs(on_gpu, X), expected, atol=1e-6)
    on_cpu = sk_softreg.load(path, device="cpu")
    assert on_cpu.get_params()["device"] == "cpu"
    assert all(p.device.type == "cpu" for p in on_cpu.module_.parameters())
    _assert_close_outputs(_outputs(on_cpu, X), expected, atol=1e-5)
    assert on_cpu.sparsity_ == on_gpu.sparsity_ == est.sparsity_


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_cuda_model_exports_to_onnx(tmp_path, data, kind):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    X, y = data[kind]
    est = _make(kind, device="cuda").fit(X, y)
    path = tmp_path / "m.onnx"
    assert est.export_onnx(path) is est
    assert next(est.module_.parameters()).is_cuda  # the export left the model on the GPU
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    X_in = X.reshape(-1, *est.input_shape_) if kind == "clf" else X
    outputs = session.run(None, {"X": np.asarray(X_in, dtype=np.float32)})
    expected = _outputs(est, X)
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


# ----------------------------------------------------------------------
# BatchedGridSearchCV: the stacks on the GPU
def _first_output(est, X, y):
    """A scorer: the first test row's prediction (the classifier's top probability), the
    member's prediction itself."""
    if hasattr(est, "predict_proba"):
        return float(est.predict_proba(X)[0].max())
    return float(np.ravel(est.predict(X)[0])[0])


def _sparsity(est, X, y):
    return float(est.sparsity_)


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_cuda_stacked_search_equals_gridsearch(no_tf32, deterministic_cudnn, data, kind):
    # every fit stacked on the GPU (the default CNN by its grouped convolution, the default
    # GaussianMLP by its direct forward), each member equal to its own CUDA fit; refit on CUDA
    X, y = data[kind]
    X, y = X[:300], y[:300]
    est = _make(kind, device="cuda")
    grid = {"lambda1": [0.0, est.lambda1], "alpha": [0.0, 0.1]}
    kwargs = {"cv": KFold(3, shuffle=True, random_state=0),
              "scoring": {"p0": _first_output, "sparsity": _sparsity}, "refit": "p0"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", StackingFallbackWarning)
        batched = BatchedGridSearchCV(est, grid, **kwargs).fit(X, y)
    plain = GridSearchCV(est, grid, **kwargs).fit(X, y)
    assert batched.n_stacks_ == 1 and batched.n_fallback_fits_ == 0
    for key in ("mean_test_p0", "mean_test_sparsity"):
        np.testing.assert_allclose(batched.cv_results_[key], plain.cv_results_[key], atol=1e-4,
                                   err_msg=key)
    assert np.ptp(batched.cv_results_["mean_test_p0"]) > 1e-3  # the candidates differ
    assert batched.best_params_ == plain.best_params_
    assert all(p.is_cuda for p in batched.best_estimator_.module_.parameters())
    _assert_close_outputs(_outputs(batched.best_estimator_, X), _outputs(plain.best_estimator_, X),
                          atol=1e-4)
