"""Public API that no other test reaches: normalize_y=False, load's trusted_modules and
device, successive halving over max_epochs, a callable penalize, ImageFolderDataset's
transform, the CLI's --module and demo, temperature calibration."""

import warnings

import joblib
import numpy as np
import pytest
import torch
from _image_folder import make_image_folder
from _user_module import UserMeans

import sk_softreg
from sk_softreg import ModelFileError, SoftRegCNNClassifier, SoftRegRegressor
from sk_softreg._torchvision import TorchvisionClassifierNet
from sk_softreg.cli import main
from sk_softreg.datasets import ImageFolderDataset, load_image_folder

TINY_CNN = {"module__channels": (4, 8), "module__hidden_units": 16}


# ----------------------------------------------------------------------
# SoftRegRegressor(normalize_y=False)
def test_normalize_y_false_trains_and_predicts_in_y_units():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3))
    signal = X @ np.array([1.0, -0.5, 0.25])
    y = 1000.0 + 50.0 * signal / signal.std()  # mean 1000, std 50
    reg = SoftRegRegressor(normalize_y=False, lr=0.05, max_epochs=60, batch_size=32,
                           module__dropout=0.0, early_stopping=False, random_state=0,
                           device="cpu").fit(X, y)
    # no standardization: the documented identity transform
    np.testing.assert_array_equal(reg.y_mean_, [0.0])
    np.testing.assert_array_equal(reg.y_scale_, [1.0])
    pred = reg.predict(X)
    assert pred.shape == y.shape
    # the network itself learned y's units: its raw mean output is the prediction
    with torch.no_grad():
        raw = reg.module_(torch.as_tensor(X, dtype=torch.float32))[:, 0].numpy()
    np.testing.assert_allclose(pred, raw, rtol=1e-6)
    # and it fits: errors small against y's spread of 50, around a level of 1000
    assert np.abs(pred - y).mean() < 10.0
    assert 1 - np.mean((pred - y) ** 2) / y.var() > 0.9
    # residual_std_ is in y's units too
    np.testing.assert_allclose(reg.residual_std_, [np.sqrt(np.mean((pred - y) ** 2))], rtol=1e-4)


# ----------------------------------------------------------------------
# sk_softreg.load(trusted_modules=..., device=...)
@pytest.fixture(scope="module")
def user_model(regression_data):
    X, y = regression_data
    reg = SoftRegRegressor(UserMeans, module__hidden=12, alpha=0.1, lambda1=1e-3, max_epochs=3,
                           batch_size=32, random_state=0, device="cpu").fit(X, y)
    return reg, X


def _outputs(reg, X):
    return reg.predict(X, return_std=True)


def test_load_imports_a_user_module_only_when_trusted(user_model, tmp_path):
    reg, X = user_model
    path = tmp_path / "user.safetensors"
    reg.save(path)  # the class is stored by its import path, _user_module.UserMeans
    with pytest.raises(ModelFileError, match=r"'_user_module.UserMeans', outside the allowed"):
        sk_softreg.load(path)
    with pytest.raises(ModelFileError, match="outside the allowed"):
        sk_softreg.load(path, trusted_modules=["user_module", "tests"])  # not that package
    with pytest.raises(ModelFileError, match="outside the allowed"):
        sk_softreg.load(path, trusted_modules="_user_modules")  # one name, not its letters
    assert sk_softreg.load(path, trusted_modules="_user_module").module is UserMeans
    loaded = sk_softreg.load(path, trusted_modules=["_user_module"])
    assert loaded.module is UserMeans and type(loaded.module_) is UserMeans
    assert loaded.get_params()["module__hidden"] == 12
    assert loaded.module_.net[0].out_features == 12
    for a, b in zip(_outputs(loaded, X), _outputs(reg, X)):
        np.testing.assert_array_equal(a, b)


def test_load_device_cpu_for_a_cuda_saved_model(user_model, tmp_path, monkeypatch):
    reg, X = user_model
    path = tmp_path / "user.safetensors"
    with monkeypatch.context() as m:
        m.setattr(reg, "_device_param", "cuda")  # saved as a CUDA model's file is
        reg.save(path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = sk_softreg.load(path, device="cpu", trusted_modules=("_user_module",))
    # an explicit device: no "CUDA is not available; loading on the CPU" warning
    assert not [w for w in caught if "CUDA" in str(w.message)]
    assert loaded.get_params()["device"] == "cpu" and loaded.device == "cpu"
    params = [*loaded.module_.parameters(), *loaded.log_var_.parameters()]
    assert params and all(p.device.type == "cpu" for p in params)
    for a, b in zip(_outputs(loaded, X), _outputs(reg, X)):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------
# HalvingGridSearchCV with max_epochs as the resource and early stopping
def test_halving_search_over_max_epochs_with_early_stopping(regression_data):
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV

    X, y = regression_data
    # tol=10 (in standardized valid_loss) is never met: each fit stops after
    # n_iter_no_change=1 epoch without progress, i.e. after 2 epochs
    est = SoftRegRegressor(early_stopping=True, n_iter_no_change=1, tol=10.0, batch_size=32,
                           module__dropout=0.0, random_state=0, device="cpu")
    search = HalvingGridSearchCV(
        est, {"lambda2": [0.0, 1e-3, 1e-2]}, resource="max_epochs", min_resources=2,
        max_resources=6, factor=3, cv=2, random_state=0,
    ).fit(X, y)
    res = search.cv_results_
    assert search.n_resources_ == [2, 6]
    assert list(res["n_resources"]) == [2, 2, 2, 6]
    # the resource reached each candidate as its max_epochs
    assert list(res["param_max_epochs"]) == list(res["n_resources"])
    assert np.all(np.isfinite(res["mean_test_score"]))
    best = search.best_estimator_
    assert best.max_epochs == 6
    assert "valid_loss" in best.history[-1]  # early stopping held out a validation set
    assert best.n_iter_ == len(best.history) == 2 < best.max_epochs
    assert best.best_epoch_ == 1


# ----------------------------------------------------------------------
# a callable penalize
def _first_layer_weight(name, param):
    """Penalize the first hidden layer's weight of GaussianMLP only."""
    return name.startswith("body.0.") and param.ndim > 1


def test_callable_penalize_chooses_the_penalized_weights(regression_data):
    X, y = regression_data
    kw = dict(lambda1=0.05, alpha=0.1, max_epochs=10, batch_size=32, module__dropout=0.0,
              early_stopping=False, random_state=0, device="cpu")
    first = SoftRegRegressor(penalize=_first_layer_weight, **kw).fit(X, y)
    weights = dict(first.module_.named_parameters())
    w1 = weights["body.0.weight"]
    zeros = int((w1 == 0).sum())
    assert 0 < zeros < w1.numel()
    # sparsity_ counts the chosen tensor only
    assert first.sparsity_ == zeros / w1.numel()
    # the other weights are not thresholded: no exact zeros
    for name in ("mean.weight", "body.0.bias", "mean.bias"):
        assert int((weights[name] == 0).sum()) == 0, name
    # control: the same lambda1 on every weight matrix does zero weights of the output layer
    every = SoftRegRegressor(**kw).fit(X, y)
    assert int((every.module_.mean.weight == 0).sum()) > 0
    total = sum(p.numel() for p in every.module_.parameters() if p.ndim > 1)
    zeros_all = sum(int((p == 0).sum()) for p in every.module_.parameters() if p.ndim > 1)
    assert every.sparsity_ == zeros_all / total


# ----------------------------------------------------------------------
# ImageFolderDataset(transform=...)
def test_image_folder_dataset_applies_the_transform(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", n_per_class=3, size=10)
    plain = ImageFolderDataset(folder, grayscale=True)
    seen = []

    def record_then_zero(image):
        seen.append((type(image), image.dtype, tuple(image.shape)))
        return image * 0

    zeroed = ImageFolderDataset(folder, grayscale=True, transform=record_then_zero)
    flipped = ImageFolderDataset(folder, grayscale=True, transform=lambda im: im.flip(-1))
    for i in (0, 4, 8):
        image, target = plain[i]
        assert image.abs().sum() > 0
        z, z_target = zeroed[i]
        assert torch.equal(z, torch.zeros_like(image)) and z_target == target
        f, _ = flipped[i]
        assert torch.equal(f, image.flip(-1)) and not torch.equal(f, image)
    # the transform gets the float32 (C, H, W) tensor of the image
    assert seen == [(torch.Tensor, torch.float32, (1, 10, 10))] * 3
    # and the estimators see its output: a downsampling transform sets input_shape_
    half = ImageFolderDataset(folder, grayscale=True, transform=lambda im: im[:, ::2, ::2])
    clf = SoftRegCNNClassifier(max_epochs=1, batch_size=8, random_state=0, device="cpu",
                               **TINY_CNN).fit(half)
    assert clf.input_shape_ == (1, 5, 5)
    assert clf.classes_.tolist() == ["circle", "cross", "square"]


# ----------------------------------------------------------------------
# the CLI: fit --module, demo
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cli_cov") / "imgs", n_per_class=4, size=10)


def test_cli_fit_module_option(folder, tmp_path, capsys):
    model = tmp_path / "tv.joblib"
    argv = ["fit", str(folder), "-o", str(model), "--epochs", "1", "--batch-size", "12",
            "--grayscale", "--device", "cpu", "-q", "--module", "mobilenet_v3_small"]
    assert main(argv) == 0
    clf = joblib.load(model)
    assert clf.module == "mobilenet_v3_small"
    assert isinstance(clf.module_, TorchvisionClassifierNet)
    assert clf.module_.name == "mobilenet_v3_small"
    first = next(m for m in clf.module_.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 1  # --grayscale reached the torchvision network
    X, _, _ = load_image_folder(folder, grayscale=True)
    assert clf.predict_proba(X).shape == (12, 3)
    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    assert "module = 'mobilenet_v3_small'" in capsys.readouterr().out
    # an unknown name: one line on stderr, exit status 2, no model written
    bad = tmp_path / "bad.joblib"
    assert main([*argv[:2], "-o", str(bad), *argv[4:-1], "resnet1800"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sk-softreg: error: ") and err.count("\n") == 1
    assert "'resnet1800'" in err and "resnet18" in err.split("Did you mean", 1)[1]
    assert not bad.exists()


def test_cli_demo_passes_its_options(monkeypatch):
    calls = []
    monkeypatch.setattr("sk_softreg._demo.run_demo", lambda **kw: calls.append(kw))
    assert main(["demo"]) == 0
    assert main(["demo", "--epochs", "4", "--cv", "5", "--n-jobs", "1", "--device", "cpu",
                 "-o", "m.joblib"]) == 0
    assert calls == [
        {"max_epochs": None, "cv": 3, "n_jobs": 2, "device": "auto",
         "output": "digits_model.joblib"},
        {"max_epochs": 4, "cv": 5, "n_jobs": 1, "device": "cpu", "output": "m.joblib"},
    ]


def test_cli_demo_runs_end_to_end_on_few_digits(monkeypatch, tmp_path, capsys):
    from sklearn.datasets import load_digits

    import sk_softreg._demo as demo

    X, y = load_digits(return_X_y=True)
    monkeypatch.setattr(demo, "load_digits", lambda return_X_y: (X[:160], y[:160]))
    monkeypatch.setattr(demo, "DEFAULT_GRID", {"lambda1": [0.0, 1e-2]})
    monkeypatch.setattr(demo, "SoftRegCNNClassifier",
                        lambda **kw: SoftRegCNNClassifier(**TINY_CNN, batch_size=32, **kw))
    model = tmp_path / "demo.joblib"
    assert main(["demo", "--epochs", "1", "--cv", "2", "--n-jobs", "1", "--device", "cpu",
                 "-o", str(model)]) == 0
    out = capsys.readouterr().out
    assert "(120 train / 40 test, cv=2)" in out
    assert f"saved best model to {model}" in out
    best = joblib.load(model)
    assert isinstance(best, SoftRegCNNClassifier)
    assert best.max_epochs == 1 and best.device == "cpu" and best.n_iter_ == 1
    assert best.lambda1 in (0.0, 1e-2)


# ----------------------------------------------------------------------
# temperature scaling around a frozen classifier
def _has_temperature_method():
    from sklearn.calibration import CalibratedClassifierCV

    constraints = CalibratedClassifierCV._parameter_constraints["method"]
    return any("temperature" in getattr(c, "options", ()) for c in constraints)


@pytest.mark.skipif(not _has_temperature_method(),
                    reason="CalibratedClassifierCV(method='temperature') needs scikit-learn >= 1.8")
def test_temperature_scaling_of_a_frozen_classifier(digits):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.metrics import log_loss

    X, y = digits
    labels = np.array(list("abcdefghij"))[y]  # strings: the columns must follow classes_
    train, cal, test = slice(0, 600), slice(600, 1000), slice(1000, 1400)
    # alpha=0.3 (label smoothing) pulls the probabilities towards uniform: under-confident
    clf = SoftRegCNNClassifier(alpha=0.3, max_epochs=8, batch_size=32, random_state=0,
                               device="cpu", **TINY_CNN).fit(X[train], labels[train])
    calibrated = CalibratedClassifierCV(FrozenEstimator(clf), method="temperature")
    calibrated.fit(X[cal], labels[cal])
    proba = calibrated.predict_proba(X[test])
    assert proba.shape == (400, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(calibrated.classes_, clf.classes_)
    # one temperature keeps every row's ranking
    np.testing.assert_array_equal(calibrated.predict(X[test]), clf.predict(X[test]))
    raw = log_loss(labels[test], clf.predict_proba(X[test]), labels=clf.classes_)
    scaled = log_loss(labels[test], proba, labels=calibrated.classes_)
    assert scaled < raw - 0.02
    # the frozen classifier was not refitted
    assert calibrated.calibrated_classifiers_[0].estimator.estimator is clf
