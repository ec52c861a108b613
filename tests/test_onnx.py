"""est.export_onnx: parity with predict_proba / predict under onnxruntime, errors, CLI."""

import json
import sys

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_regression
from sklearn.exceptions import NotFittedError
from torch import nn

import sk_softreg
from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor
from sk_softreg._onnx import _plain
from sk_softreg.cli import main

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

TOL = 1e-4


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(path, X):
    return _session(path).run(None, {"X": np.asarray(X, dtype=np.float32)})


@pytest.fixture(scope="module")
def digits_split(digits):
    X, y = digits
    return X[:300], y[:300], X[1500:1600], y[1500:1600]  # train / held out


@pytest.mark.parametrize(
    "module, n_train, n_test",
    [(None, 200, 100), ("resnet18", 32, 32)],
    ids=["default_cnn", "resnet18"],
)
def test_classifier_probabilities_match_predict_proba(digits_split, tmp_path, module, n_train,
                                                      n_test):
    X, y, X_test, _ = digits_split
    X_test = X_test[:n_test]
    clf = SoftRegCNNClassifier(module=module, alpha=0.1, max_epochs=1, batch_size=32,
                               random_state=0, device="cpu")
    clf.fit(X[:n_train], y[:n_train])
    path = tmp_path / "clf.onnx"
    assert clf.export_onnx(path) is clf
    images = X_test.reshape(-1, *clf.input_shape_)
    (proba,) = _run(path, images)
    expected = clf.predict_proba(X_test)
    assert proba.shape == expected.shape == (n_test, 10)
    assert np.abs(proba - expected).max() <= TOL
    # one sample and an odd batch run on the same graph (dynamic batch axis)
    assert _run(path, images[:1])[0].shape == (1, 10)
    assert np.abs(_run(path, images[:7])[0] - expected[:7]).max() <= TOL


def test_classifier_graph_ends_and_metadata(digits_split, tmp_path):
    import onnx

    X, y, _, _ = digits_split
    labels = np.array(["zero", "one", "two"])[y[:90] % 3]
    clf = SoftRegCNNClassifier(max_epochs=1, random_state=0, device="cpu",
                               module__channels=(4,), module__hidden_units=8)
    clf.fit(X[:90], labels)
    path = tmp_path / "clf.onnx"
    clf.export_onnx(path)
    model = onnx.load(str(path))
    (inp,) = model.graph.input
    assert inp.name == "X"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 8, 8]
    assert [o.name for o in model.graph.output] == ["probabilities"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == ["one", "two", "zero"] == list(clf.classes_)
    assert meta["estimator"] == "SoftRegCNNClassifier"
    assert meta["sk_softreg_version"] == sk_softreg.__version__
    assert json.loads(meta["input_shape"]) == [1, 8, 8] and json.loads(meta["multilabel"]) is False
    # the probability columns follow classes_
    (proba,) = _run(path, X[:20].reshape(-1, 1, 8, 8))
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X[:20]))


def test_multilabel_graph_ends_in_the_per_label_sigmoid(digits_split, tmp_path):
    import onnx

    X, y, X_test, _ = digits_split
    Y = np.c_[y % 2 == 0, y >= 5, np.isin(y, [2, 3, 5, 7])].astype(int)
    clf = SoftRegCNNClassifier(max_epochs=1, random_state=0, device="cpu",
                               module__channels=(4,), module__hidden_units=8).fit(X, Y)
    path = tmp_path / "multilabel.onnx"
    clf.export_onnx(path)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["multilabel"]) is True and json.loads(meta["classes"]) == [0, 1, 2]
    (proba,) = _run(path, X_test.reshape(-1, 1, 8, 8))
    expected = clf.predict_proba(X_test)
    assert proba.shape == expected.shape == (len(X_test), 3)
    assert np.abs(proba - expected).max() <= TOL
    assert not np.allclose(proba.sum(axis=1), 1.0)  # no softmax across labels


class MeansOnly(nn.Module):
    """Returns one mean per output: the regressor adds its learned log-variance."""

    def __init__(self, n_features=1, n_outputs=1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, 16), nn.Tanh(), nn.Linear(16, n_outputs))

    def forward(self, X):
        return self.net(X)


@pytest.mark.parametrize(
    "case", ["1d_alpha", "1d_residual_std", "2d_alpha", "2d_means_only", "1d_far_offset"],
)
def test_regressor_mean_and_std_match_predict(tmp_path, case):
    X, y = make_regression(n_samples=240, n_features=6, n_targets=2, noise=5.0, random_state=0)
    # y away from standardized units (the graph must undo normalize_y), with a std of 5:
    # the network runs in float32, so differences grow with y_scale_
    # far_offset: a y_mean_ that float32 cannot hold to 1e-4 (the graph keeps it in float64)
    y = 5.0 * y / y.std(axis=0) + (1e6 + 1 / 3 if case == "1d_far_offset" else 50.0)
    params = {"alpha": 0.1, "max_epochs": 15, "random_state": 0, "device": "cpu",
              "lambda_features": 1e-2}
    if case == "1d_residual_std":
        params["alpha"] = 0.0
    if case == "2d_means_only":
        params["module"] = MeansOnly
    if case.startswith("1d"):
        y = y[:, 0]
    reg = SoftRegRegressor(**params).fit(X[:200], y[:200])
    path = tmp_path / "reg.onnx"
    reg.export_onnx(path)
    mean, std = _run(path, X[200:])
    expected_mean, expected_std = reg.predict(X[200:], return_std=True)
    assert mean.shape == expected_mean.shape and std.shape == expected_std.shape
    assert mean.dtype == np.float64
    assert np.abs(mean - expected_mean).max() <= TOL
    assert np.abs(std - expected_std).max() <= TOL
    if case == "1d_residual_std":
        np.testing.assert_allclose(std, reg.residual_std_[0])
    assert [o.name for o in _session(path).get_outputs()] == ["mean", "std"]


def test_unfitted_estimator_raises_not_fitted(tmp_path):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        SoftRegRegressor().export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("missing, names", [
    (("onnxscript",), "onnxscript is not installed"),
    (("onnx", "onnxscript"), "onnx, onnxscript are not installed"),
])
def test_missing_extra_names_the_install_command(monkeypatch, tmp_path, regression_data, missing,
                                                 names):
    X, y = regression_data
    reg = SoftRegRegressor(max_epochs=1, random_state=0, device="cpu").fit(X, y)
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "sk-softreg\[onnx\]"') as info:
        reg.export_onnx(tmp_path / "m.onnx")
    assert names in str(info.value)


def test_export_leaves_the_estimator_as_it_is_and_writes_one_file(tmp_path, regression_data):
    """The graph is built on copies of the fitted modules (their train/eval mode is kept),
    and the weights are inside the one .onnx file, with no external data file."""
    X, y = regression_data
    reg = SoftRegRegressor(module=MeansOnly, module__n_features=5, alpha=0.1, max_epochs=1,
                           random_state=0, device="cpu").fit(X, y)
    reg.module_.train()
    reg.log_var_.train()
    reg.export_onnx(tmp_path / "reg.onnx")
    assert reg.module_.training and reg.log_var_.training
    assert [p.name for p in tmp_path.iterdir()] == ["reg.onnx"]


@pytest.mark.parametrize("value, expected", [
    (np.array([["a", "b"], ["c", "d"]]), [["a", "b"], ["c", "d"]]),
    ((1, 8, 8), [1, 8, 8]),
    (np.float32(0.5), 0.5),
    (np.int64(3), 3),
    (np.bool_(True), True),
    (None, None),
])
def test_metadata_values_become_plain_json(value, expected):
    """Arrays, tuples and numpy scalars become JSON lists and numbers (``_plain``)."""
    assert json.loads(json.dumps(_plain(value))) == expected


def test_cli_export_end_to_end(tmp_path, capsys, regression_data):
    X, y = regression_data
    reg = SoftRegRegressor(alpha=0.1, max_epochs=3, random_state=0, device="cpu").fit(X, y)
    model = tmp_path / "model.joblib"
    joblib.dump(reg, model)
    out = tmp_path / "model.onnx"
    assert main(["export", str(model), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    mean, std = _run(out, X[:30])
    expected_mean, expected_std = reg.predict(X[:30], return_std=True)
    assert np.abs(mean - expected_mean).max() <= TOL
    assert np.abs(std - expected_std).max() <= TOL
    # a file that is not a model: one line on stderr, exit status 2
    junk = tmp_path / "junk.joblib"
    joblib.dump({"a": 1}, junk)
    assert main(["export", str(junk), str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sk-softreg: error: ") and err.count("\n") == 1


def test_cli_export_takes_the_output_as_o_too(tmp_path, capsys, regression_data):
    """``-o OUTPUT``, as in ``fit``, ``predict`` and ``demo``, or the positional form; not
    both, not neither (argparse's usage error, exit status 2)."""
    X, y = regression_data
    model = tmp_path / "model.joblib"
    joblib.dump(SoftRegRegressor(max_epochs=1, random_state=0, device="cpu").fit(X, y), model)
    out = tmp_path / "m.onnx"
    assert main(["export", str(model), "-o", str(out)]) == 0
    assert out.exists() and f"wrote {out}" in capsys.readouterr().out
    for argv in (["export", str(model)], ["export", str(model), str(out), "-o", str(out)]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "give the .onnx file to write once" in capsys.readouterr().err


def test_cli_export_without_the_extra_exits_2(monkeypatch, tmp_path, capsys, regression_data):
    X, y = regression_data
    model = tmp_path / "model.joblib"
    joblib.dump(SoftRegRegressor(max_epochs=1, random_state=0, device="cpu").fit(X, y), model)
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", str(model), str(tmp_path / "m.onnx")]) == 2
    assert 'pip install "sk-softreg[onnx]"' in capsys.readouterr().err
