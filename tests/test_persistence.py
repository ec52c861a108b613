"""Persistence: pickle/joblib round trips, callbacks, CUDA -> CPU, the safe format."""

import ast
import io
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import skorch
import torch
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Checkpoint, EarlyStopping, LRScheduler

import sk_softreg
from sk_softreg import ModelFileError, SoftRegCNNClassifier, SoftRegRegressor

REPO = Path(__file__).resolve().parents[1]
FAST = {"batch_size": 16, "lr": 1e-3, "device": "cpu", "random_state": 0, "max_epochs": 2}
TINY_CNN = {"module__channels": (4, 8), "module__hidden_units": 16}
_rng = np.random.RandomState(0)
X_IMG = _rng.rand(40, 1, 4, 4).astype(np.float32)
Y_STR = np.array(["cat", "dog", "owl"])[np.arange(40) % 3]
X_TAB = _rng.randn(40, 4)
Y_2D = np.c_[X_TAB @ [1.0, -1.0, 0.5, 0.0], X_TAB[:, 0] ** 2]

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _classifier(**kw):
    return SoftRegCNNClassifier(**{**FAST, **TINY_CNN, "lambda1": 1e-3, "alpha": 0.1, **kw}).fit(X_IMG, Y_STR)


def _regressor(**kw):
    return SoftRegRegressor(**{**FAST, "lambda2": 1e-3, "alpha": 0.1, **kw}).fit(X_TAB, Y_2D)


def _outputs(est, X):
    if isinstance(est, SoftRegCNNClassifier):
        return [est.predict_proba(X), est.predict(X)]
    return list(est.predict(X, return_std=True))


def _assert_same_outputs(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def models():
    return {"clf": (_classifier(), X_IMG), "reg": (_regressor(alpha=0.0), X_TAB)}


# ----------------------------------------------------------------------
# joblib / pickle
@pytest.mark.parametrize("key", ["clf", "reg"])
def test_joblib_round_trip_same_process(models, key, tmp_path):
    est, X = models[key]
    joblib.dump(est, tmp_path / "m.joblib")
    loaded = joblib.load(tmp_path / "m.joblib")
    _assert_same_outputs(_outputs(est, X), _outputs(loaded, X))
    assert loaded.get_params()["device"] == "cpu"


_CHILD = """
import sys, joblib, numpy as np, sk_softreg
for kind, path, X_path, out in zip(*[iter(sys.argv[1:])] * 4):
    X = np.load(X_path)
    est = joblib.load(path) if kind == "joblib" else sk_softreg.load(path)
    res = est.predict_proba(X) if hasattr(est, "classes_") else np.column_stack(est.predict(X, return_std=True))
    np.save(out, res)
"""


def test_round_trip_in_a_new_process(models, tmp_path):
    # one child process loads every model (joblib and the safe format), to keep this fast
    args, expected = [], {}
    for key, (est, X) in models.items():
        np.save(tmp_path / f"X_{key}.npy", X)
        expected[key] = est.predict_proba(X) if key == "clf" else np.column_stack(est.predict(X, return_std=True))
        for kind in ("joblib", "safe"):
            path = tmp_path / f"{key}.{kind}"
            joblib.dump(est, path) if kind == "joblib" else est.save(path)
            args += [kind, str(path), str(tmp_path / f"X_{key}.npy"), str(tmp_path / f"out_{key}_{kind}.npy")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", _CHILD, *args], check=True, env=env, cwd=tmp_path)
    for key in models:
        for kind in ("joblib", "safe"):
            np.testing.assert_array_equal(np.load(tmp_path / f"out_{key}_{kind}.npy"), expected[key])


# ----------------------------------------------------------------------
# callbacks
def _with_callbacks(tmp_path):
    return SoftRegRegressor(
        **{**FAST, "max_epochs": 3},
        callbacks=[
            ("lrs", LRScheduler(policy="StepLR", step_size=1, gamma=0.5)),
            ("ckpt", Checkpoint(monitor="train_loss_best", dirname=str(tmp_path / "ckpt"))),
        ],
    ).fit(X_TAB, Y_2D)


def test_lr_scheduler_and_checkpoint_pickle(tmp_path):
    est = _with_callbacks(tmp_path)
    assert dict(est.callbacks_)["lrs"].lr_scheduler_ is not None  # the live net keeps it
    loaded = pickle.loads(pickle.dumps(est))
    _assert_same_outputs(_outputs(est, X_TAB), _outputs(loaded, X_TAB))
    assert isinstance(dict(loaded.callbacks_)["ckpt"], Checkpoint)
    # training goes on exactly as it does for the never-pickled net: the
    # scheduler is rebuilt from history on the loaded net's own optimizer
    for net in (est, loaded):
        torch.manual_seed(0)
        net.partial_fit(X_TAB, Y_2D)
    assert len(loaded.history) == 6
    assert dict(loaded.callbacks_)["lrs"].lr_scheduler_.optimizer is loaded.optimizer_
    assert loaded.optimizer_.param_groups[0]["lr"] == est.optimizer_.param_groups[0]["lr"] < est.lr
    _assert_same_outputs(_outputs(est, X_TAB), _outputs(loaded, X_TAB))


class _TensorRecorder(pickle.Unpickler):
    """Unpickle, recording every tensor/storage rebuilt by *this* (outer) pickle.

    skorch stores the registered modules, criteria and optimizers in a nested
    blob that ``__setstate__`` loads with ``map_location``; this unpickler does
    not see inside it. Anything it records lives outside registered modules.
    """

    def __init__(self, file):
        super().__init__(file)
        self.found = []

    def find_class(self, module, name):
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            def record(b):
                t = torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)
                self.found.append(("storage", b))
                return t
            return record
        if module.startswith("torch") and "rebuild" in name:
            self.found.append((module, name))
        return super().find_class(module, name)


def _tensors_outside_registered(est):
    rec = _TensorRecorder(io.BytesIO(pickle.dumps(est)))
    rec.load()
    return rec.found


def test_pickle_holds_no_tensor_outside_registered_modules(tmp_path):
    est = _with_callbacks(tmp_path)
    assert _tensors_outside_registered(est) == []


def _early_stopping_fit(**kw):
    # monitors train_loss so it needs no validation split; patience keeps it training
    es = EarlyStopping(monitor="train_loss", patience=100, load_best=True)
    est = _regressor(callbacks=[("es", es)], max_epochs=3, **kw)
    assert dict(est.callbacks_)["es"].best_model_weights_ is not None  # the live copy exists
    return est


def test_early_stopping_load_best_pickle_holds_no_tensor():
    # EarlyStopping(load_best=True) keeps a copy of the module's state_dict outside
    # the registered modules (a CUDA one after a CUDA fit); it must not be pickled.
    est = _early_stopping_fit()
    assert _tensors_outside_registered(est) == []
    loaded = pickle.loads(pickle.dumps(est))
    _assert_same_outputs(_outputs(est, X_TAB), _outputs(loaded, X_TAB))
    loaded.partial_fit(X_TAB, Y_2D)  # the callback starts afresh
    assert dict(loaded.callbacks_)["es"].best_model_weights_ is not None


@pytest.mark.skipif(skorch.__version__ != "1.4.0", reason="documents skorch 1.4.0's LRScheduler (issue #1096)")
def test_plain_skorch_lr_scheduler_leaks_tensors():
    # control: the recorder does see the leak that sk_softreg removes
    net = skorch.NeuralNetRegressor(
        torch.nn.Linear, module__in_features=4, module__out_features=1, max_epochs=1,
        callbacks=[LRScheduler(policy="StepLR", step_size=1)], device="cpu",
    ).fit(X_TAB.astype(np.float32), Y_2D[:, :1].astype(np.float32))
    assert _tensors_outside_registered(net)


class _FakeCuda:
    """Pickle with every tensor storage tagged as living on 'cuda:0'.

    The bytes then claim CUDA exactly as a CUDA-trained net's would, so loading
    them without CUDA needs skorch's ``map_location`` handling: a plain
    ``torch.load`` raises "Attempting to deserialize object on a CUDA device".
    """

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def dumps(self, est):
        with self.monkeypatch.context() as m:
            m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
            est._device_param = "cuda"
            try:
                return pickle.dumps(est)
            finally:
                est._device_param = "cpu"


def test_fake_cuda_bytes_really_need_map_location(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        buf = io.BytesIO()
        torch.save(torch.ones(2), buf)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(io.BytesIO(buf.getvalue()), weights_only=True)


@pytest.mark.parametrize("with_callbacks", [False, True])
def test_cuda_fitted_model_loads_on_cpu_simulated(monkeypatch, tmp_path, with_callbacks):
    est = _with_callbacks(tmp_path) if with_callbacks else _regressor()
    blob = _FakeCuda(monkeypatch).dumps(est)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(skorch.exceptions.DeviceWarning):
        loaded = pickle.loads(blob)
    assert loaded.device == "cpu" and loaded.get_params()["device"] == "cpu"
    assert next(loaded.module_.parameters()).device.type == "cpu"
    _assert_same_outputs(_outputs(est, X_TAB), _outputs(loaded, X_TAB))


@needs_cuda
def test_cuda_pickle_has_no_cuda_tensor_outside_modules_gpu(tmp_path):
    est = _with_callbacks(tmp_path).set_params(device="cuda").fit(X_TAB, Y_2D)
    assert next(est.module_.parameters()).is_cuda
    assert _tensors_outside_registered(est) == []


@needs_cuda
def test_cuda_early_stopping_pickle_has_no_cuda_tensor_outside_modules_gpu():
    est = _early_stopping_fit(device="cuda")
    assert next(iter(dict(est.callbacks_)["es"].best_model_weights_.values())).is_cuda
    assert _tensors_outside_registered(est) == []


@needs_cuda
@pytest.mark.parametrize("with_callbacks", [False, True])
def test_cuda_fitted_model_loads_on_cpu_gpu(monkeypatch, tmp_path, with_callbacks):
    est = (_with_callbacks(tmp_path) if with_callbacks else _regressor()).set_params(device="cuda")
    est.fit(X_TAB, Y_2D)
    blob = pickle.dumps(est)
    expected = _outputs(est, X_TAB)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(skorch.exceptions.DeviceWarning):
        loaded = pickle.loads(blob)
    assert next(loaded.module_.parameters()).device.type == "cpu"
    for a, b in zip(expected, _outputs(loaded, X_TAB)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------
# the safe format
@pytest.mark.parametrize("key", ["clf", "reg"])
def test_safe_format_round_trip(models, key, tmp_path):
    est, X = models[key]
    est.save(tmp_path / "m.safetensors")
    loaded = sk_softreg.load(tmp_path / "m.safetensors")
    assert type(loaded) is type(est)
    _assert_same_outputs(_outputs(est, X), _outputs(loaded, X))
    params, loaded_params = est.get_params(deep=False), loaded.get_params(deep=False)
    for name in ("lambda1", "lambda2", "alpha", "lr", "module", "optimizer", "criterion", "device"):
        assert loaded_params[name] == params[name]
    for attr in ("n_features_in_", "sparsity_"):
        assert getattr(loaded, attr) == getattr(est, attr)
    if key == "clf":
        np.testing.assert_array_equal(loaded.classes_, est.classes_)
        assert loaded.input_shape_ == est.input_shape_ and loaded_params["module__channels"] == (4, 8)
    else:
        np.testing.assert_array_equal(loaded.y_mean_, est.y_mean_)
        np.testing.assert_array_equal(loaded.residual_std_, est.residual_std_)
    assert len(loaded.history) == len(est.history)


def test_safe_format_continues_training(models, tmp_path):
    est, X = models["reg"]
    est.save(tmp_path / "m.safetensors")
    loaded = sk_softreg.load(tmp_path / "m.safetensors")
    loaded.partial_fit(X, Y_2D)
    assert len(loaded.history) == len(est.history) + FAST["max_epochs"]


def test_safe_format_refuses_pickle_payload(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for name, write in [
        ("plain.pkl", lambda p: p.write_bytes(pickle.dumps(Payload()))),
        ("torch.pt", lambda p: torch.save({"x": Payload()}, p)),
    ]:
        path = tmp_path / name
        write(path)
        with pytest.raises(ModelFileError, match="not a readable sk_softreg model file.*never loaded"):
            sk_softreg.load(path)
    assert not marker.exists()
    # a real joblib pickle of a model is refused too
    joblib.dump(_regressor(max_epochs=1), tmp_path / "m.joblib")
    with pytest.raises(ModelFileError):
        sk_softreg.load(tmp_path / "m.joblib")


def _saved_with_edited_config(est, tmp_path, edit):
    """``est`` saved in the safe format, then written again with ``edit(config)`` applied to
    its config and the same weights (so their checksum still holds); the new file's path."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    est.save(tmp_path / "m.safetensors")
    with safe_open(tmp_path / "m.safetensors", framework="pt") as f:
        config = json.loads(f.metadata()["sk_softreg"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    edit(config)
    path = tmp_path / "edited.safetensors"
    save_file(tensors, path, metadata={"sk_softreg": json.dumps(config)})
    return path


@pytest.mark.parametrize("target", [
    "os.system",
    # the allow list holds top-level packages, not name prefixes
    "torchvision.models.resnet18",
    "sk_softreg_plugin.Net",
])
def test_safe_format_refuses_classes_outside_allow_list(models, tmp_path, target):
    est, _ = models["reg"]
    path = _saved_with_edited_config(
        est, tmp_path, lambda c: c["params"].update({"criterion": {"__class__": target}}))
    with pytest.raises(ModelFileError, match=f"'{target}', outside the allowed modules"):
        sk_softreg.load(path)


@pytest.mark.parametrize("target", [
    "torch.serialization.os.system",  # os.system, reached through a module of torch
    "torch.load",  # a function of torch, not a class
    "torch.package.PackageImporter",  # a torch class that unpickles a file when built...
    "torch.package.package_importer.PackageImporter",  # ... even under its own name
    "torch.serialization.os.PathLike",  # a class, under a name that is not its own
])
def test_safe_format_loads_only_classes_of_the_right_kind_under_their_own_names(
        models, tmp_path, monkeypatch, target):
    """The allow list names packages; within them, only network, loss, optimizer,
    dataset and data-loader classes load, and nothing the file names is called first."""
    est, _ = models["reg"]
    monkeypatch.chdir(tmp_path)

    def edit(config):
        config["params"].update({"criterion": {"__class__": target},
                                 "criterion__command": "echo pwned > pwned.txt",
                                 "criterion__file_or_buffer": "pwned.pt"})

    path = _saved_with_edited_config(est, tmp_path, edit)
    with pytest.raises(ModelFileError, match=f"names '{target}', which is not a network"):
        sk_softreg.load(path)
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update({"class": "Pwned"}), "Unknown estimator class 'Pwned'"),
    (lambda c: c.update({"format_version": c["format_version"] + 1}), "Upgrade sk_softreg"),
    (lambda c: c.update({"format": "other"}), "carries no sk_softreg config"),
    (lambda c: c["params"].update({"module__hidden_units": [3]}), "do not fit the network"),
    # a config value that is neither plain JSON nor one of the format's tagged values
    (lambda c: c["params"].update({"lambda1": {"__eval__": "1e-3"}}), "Unknown value"),
    # an array of a dtype outside bool/int/uint/float/str/object
    (lambda c: c["fitted"].update(
        {"y_mean_": {"__ndarray__": [0], "dtype": "<M8[s]", "shape": [1]}}),
     "Unsupported array dtype"),
])
def test_safe_format_refuses_configs_it_cannot_honour(models, tmp_path, edit, match):
    """A file whose weights pass their checksum but whose config names another class, a
    newer format, or a network its weights do not fit is refused with ModelFileError."""
    est, _ = models["reg"]
    with pytest.raises(ModelFileError, match=match):
        sk_softreg.load(_saved_with_edited_config(est, tmp_path, edit))


@pytest.mark.parametrize("damage", ["truncate", "header", "weights", "empty"])
def test_safe_format_damaged_file(models, tmp_path, damage):
    est, _ = models["clf"]
    path = tmp_path / "m.safetensors"
    est.save(path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "header":
        data[20:30] = b"\x00" * 10
    elif damage == "weights":
        data[-5] ^= 0xFF
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    match = "checksum" if damage == "weights" else "not a readable sk_softreg model file"
    with pytest.raises(ModelFileError, match=match):
        sk_softreg.load(path)


def test_safe_format_refuses_weights_missing_from_the_file(models, tmp_path):
    """Weights whose checksum holds but that lack one of the network's tensors do not
    fit the network: load refuses them rather than keeping freshly initialized ones."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from sk_softreg._persistence import _digest

    est, _ = models["reg"]
    est.save(tmp_path / "m.safetensors")
    with safe_open(tmp_path / "m.safetensors", framework="pt") as f:
        config = json.loads(f.metadata()["sk_softreg"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    dropped = sorted(k for k in tensors if k.startswith("module."))[-1]
    del tensors[dropped]
    config["sha256"] = _digest(tensors)
    path = tmp_path / "partial.safetensors"
    save_file(tensors, path, metadata={"sk_softreg": json.dumps(config)})
    with pytest.raises(ModelFileError, match="do not fit the network"):
        sk_softreg.load(path)


def test_safe_format_missing_file_is_file_not_found(tmp_path):
    """A path that does not exist is reported as such, not as a damaged model file."""
    with pytest.raises(FileNotFoundError):
        sk_softreg.load(tmp_path / "nope.safetensors")
    assert not issubclass(ModelFileError, FileNotFoundError)


def test_safe_format_refuses_subclasses(tmp_path):
    """Only the two estimator classes themselves are saved: a subclass (even one of the
    same name) would load as its base class and silently lose what it overrides."""

    class SoftRegRegressor(sk_softreg.SoftRegRegressor):
        pass

    est = SoftRegRegressor(**{**FAST, "max_epochs": 1}).fit(X_TAB, Y_2D)
    with pytest.raises(TypeError, match="save supports"):
        est.save(tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_safe_format_save_errors(tmp_path):
    with pytest.raises(NotFittedError):
        SoftRegRegressor().save(tmp_path / "m.safetensors")
    est = SoftRegRegressor(torch.nn.Linear(4, 4), **FAST).fit(X_TAB, Y_2D)
    with pytest.raises(ValueError, match="Cannot save parameter module="):
        est.save(tmp_path / "m.safetensors")


def test_safe_format_drops_callbacks_with_warning(tmp_path):
    est = _with_callbacks(tmp_path)
    with pytest.warns(UserWarning, match="callbacks"):
        est.save(tmp_path / "m.safetensors")
    loaded = sk_softreg.load(tmp_path / "m.safetensors")
    assert loaded.callbacks is None
    _assert_same_outputs(_outputs(est, X_TAB), _outputs(loaded, X_TAB))


def test_safe_format_cuda_model_loads_on_cpu(models, tmp_path, monkeypatch):
    est, X = models["reg"]
    monkeypatch.setattr(est, "_device_param", "cuda")
    est.save(tmp_path / "m.safetensors")
    monkeypatch.undo()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="CUDA is not available; loading on the CPU"):
        loaded = sk_softreg.load(tmp_path / "m.safetensors")
    assert loaded.get_params()["device"] == "cpu"
    _assert_same_outputs(_outputs(est, X), _outputs(loaded, X))


# ----------------------------------------------------------------------
# module dependencies
def _sk_softreg_imports(module):
    """sk_softreg modules that ``module`` imports anywhere (top level or in a function)."""
    tree = ast.parse((REPO / "sk_softreg" / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                names = [node.module] if node.module else [a.name for a in node.names]
                found.update(f"sk_softreg.{n}" for n in names)
            elif (node.module or "").startswith("sk_softreg"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sk_softreg"))
    return found


ESTIMATORS = {"sk_softreg", "sk_softreg._classifier", "sk_softreg._regressor",
              "sk_softreg.accelerate"}
#: the engine's modules, below the estimators and the base class
ENGINE = ["_sklearn", "_weights", "_features", "_fast_loop", "_callbacks", "_fit_state",
          "_engine", "_flat", "_numba_loops", "_batching", "_images", "_validation", "_progress",
          "_persistence", "_onnx"]


@pytest.mark.parametrize("module", ["_base", *ENGINE])
def test_engine_does_not_import_the_estimators(module):
    # estimators -> _base -> the engine's modules -> penalties and modules, never back:
    # persistence resolves the estimator classes by import path on load
    imported = _sk_softreg_imports(module)
    assert "sk_softreg._base" in _sk_softreg_imports("_classifier")  # the parser sees imports
    assert not imported & ESTIMATORS
    if module != "_base":
        assert "sk_softreg._base" not in imported


@pytest.mark.parametrize("module", ["penalties", "_divergences", "modules"])
def test_the_math_imports_nothing_of_the_package_above_it(module):
    assert _sk_softreg_imports(module) <= {"sk_softreg._divergences"}


def test_pickle_keeps_a_parameter_added_since_0_1_0():
    reg = pickle.loads(pickle.dumps(SoftRegRegressor(scoring="r2", device="cpu")))
    assert reg.scoring == "r2"


def test_pickling_leaves_the_live_lr_scheduler_alone(tmp_path):
    est = _with_callbacks(tmp_path)
    pickle.dumps(est)
    assert dict(est.callbacks_)["lrs"].lr_scheduler_ is not None


def test_a_torch_device_parameter_is_saved_as_its_name(tmp_path):
    """device=torch.device(...) is kept (as its name), not dropped with a warning."""
    X = np.random.default_rng(0).normal(size=(40, 3))
    est = SoftRegRegressor(max_epochs=1, random_state=0, device=torch.device("cpu")).fit(X, X[:, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.save(tmp_path / "m.safetensors")
    loaded = sk_softreg.load(tmp_path / "m.safetensors")
    assert loaded.device == "cpu"
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
