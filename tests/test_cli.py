"""The sk-softreg command line, end to end on a generated PNG folder."""

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from _image_folder import make_image_folder

from sk_softreg import SoftRegCNNClassifier
from sk_softreg.cli import _augment, _image_size, main
from sk_softreg.datasets import load_image_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    folder = make_image_folder(tmp / "imgs", n_per_class=6, size=12)
    model = tmp / "model.joblib"
    code = main([
        "fit", str(folder), "-o", str(model), "--epochs", "3", "--lambda1", "1e-4",
        "--alpha", "0.1", "--grayscale", "--image-size", "10", "--device", "cpu", "-q",
    ])
    assert code == 0
    return tmp, folder, model


def test_fit_writes_a_model(trained, capsys):
    _, _, model = trained
    clf = joblib.load(model)
    assert list(clf.classes_) == ["circle", "cross", "square"]
    assert clf.input_shape_ == (1, 10, 10)
    assert clf.lambda1 == 1e-4 and clf.alpha == 0.1 and len(clf.history_) == 3


def test_predict_csv_from_folder_and_npy(trained, capsys):
    tmp, folder, model = trained
    out = tmp / "pred.csv"
    assert main(["predict", str(model), str(folder), "-o", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "label", "proba_circle", "proba_cross", "proba_square"]
    assert len(rows) == 1 + 18
    for row in rows[1:]:
        proba = np.array(row[2:], dtype=float)
        assert row[1] in ("circle", "cross", "square")
        assert row[1] == ["circle", "cross", "square"][int(np.argmax(proba))]
        assert abs(proba.sum() - 1) < 1e-4
    # a .npy of already prepared images, to stdout
    np.save(tmp / "x.npy", np.zeros((2, 1, 10, 10), dtype=np.float32))
    capsys.readouterr()
    assert main(["predict", str(model), str(tmp / "x.npy")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[1].startswith("x.npy[0],")


def test_info(trained, capsys):
    _, _, model = trained
    assert main(["info", str(model)]) == 0
    out = capsys.readouterr().out
    assert "lambda1 = 0.0001" in out and "circle, cross, square" in out
    assert "sparsity:" in out and "history: 3 epochs" in out
    history = joblib.load(model).history_
    assert "network: SoftRegCNN (default)" in out
    assert f"train_loss {history[0]['train_loss']:.4f} -> {history[-1]['train_loss']:.4f}" in out


def test_fit_augment_flag(trained, tmp_path, capsys):
    _, folder, _ = trained
    common = ["fit", str(folder), "--epochs", "1", "--grayscale", "--device", "cpu", "-q"]
    fitted = {}
    for name, extra in (("plain", []), ("default", ["--augment"]), ("set", ["--augment", "20,0.25"])):
        assert main([*common, "-o", str(tmp_path / f"{name}.joblib"), *extra]) == 0
        fitted[name] = joblib.load(tmp_path / f"{name}.joblib")
    assert fitted["plain"].train_transform is None
    affine = fitted["default"].train_transform.transforms[0]
    assert list(affine.degrees) == [-8.0, 8.0] and tuple(affine.translate) == (0.1, 0.1)
    affine = fitted["set"].train_transform.transforms[0]
    assert list(affine.degrees) == [-20.0, 20.0] and tuple(affine.translate) == (0.25, 0.25)
    # the transform reaches training: same seed, another model
    X, _, _ = load_image_folder(folder, grayscale=True)
    assert not np.allclose(fitted["plain"].predict_proba(X), fitted["default"].predict_proba(X))
    with pytest.raises(SystemExit) as exc:
        main([*common, "-o", str(tmp_path / "bad.joblib"), "--augment", "8,2"])
    assert exc.value.code == 2 and "expected DEGREES >= 0 and SHIFT in [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, accepted", [
    ("--image-size", "1", True),  # N or HxW of positive ints
    ("--image-size", "1x1", True),
    ("--image-size", "0", False),
    ("--image-size", "8x0", False),
    ("--augment", "0", True),  # DEGREES >= 0 and SHIFT in [0, 1], both ends included
    ("--augment", "8,0", True),
    ("--augment", "8,1", True),
    ("--augment", "-1", False),
    ("--augment", "8,0.1,0.1", False),
])
def test_fit_option_ranges(tmp_path, capsys, flag, value, accepted):
    """Values in the documented ranges parse (fit then stops at the missing folder, exit
    2 from main); values outside them are argparse errors (SystemExit 2)."""
    argv = ["fit", str(tmp_path / "nope"), "-o", str(tmp_path / "m.joblib"), f"{flag}={value}"]
    if accepted:
        assert main(argv) == 2
        assert "does not exist" in capsys.readouterr().err
    else:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and "expected" in capsys.readouterr().err


@pytest.mark.parametrize("parse, text, expected", [
    (_image_size, "10", 10),
    (_image_size, "8x6", (8, 6)),  # H x W
    (_image_size, "8X6", (8, 6)),
    (_image_size, "8,6", (8, 6)),
    (_augment, "20", (20.0, 0.1)),  # SHIFT defaults to 0.1
    (_augment, "20,0.25", (20.0, 0.25)),
])
def test_option_values_parse(parse, text, expected):
    assert parse(text) == expected


def test_fit_passes_its_options_and_reports_the_train_accuracy(trained, tmp_path, capsys):
    _, folder, _ = trained
    out = tmp_path / "m.joblib"
    assert main(["fit", str(folder), "-o", str(out), "--epochs", "1", "--lambda2", "0.003",
                 "--kl", "confidence_penalty", "--batch-size", "7", "--lr", "0.05",
                 "--random-state", "4", "--grayscale", "--device", "cpu", "-q"]) == 0
    clf = joblib.load(out)
    assert (clf.lambda2, clf.kl, clf.batch_size, clf.lr, clf.random_state) == (
        0.003, "confidence_penalty", 7, 0.05, 4)
    X, y, _ = load_image_folder(folder, grayscale=True)
    assert f"train accuracy {np.mean(clf.predict(X) == y):.4f};" in capsys.readouterr().out


def test_predict_folder_with_an_rgb_model_of_non_square_images(trained, tmp_path):
    """Images are read as the model's channels (3 here) and resized to its (H, W)."""
    _, folder, _ = trained
    model = tmp_path / "rgb.joblib"
    assert main(["fit", str(folder), "-o", str(model), "--epochs", "1", "--image-size", "8x6",
                 "--device", "cpu", "-q"]) == 0
    clf = joblib.load(model)
    assert clf.input_shape_ == (3, 8, 6)
    out = tmp_path / "pred.csv"
    assert main(["predict", str(model), str(folder), "-o", str(out)]) == 0
    with open(out) as f:
        rows = {row[0]: np.array(row[2:], dtype=float) for row in list(csv.reader(f))[1:]}
    X, _, paths = load_image_folder(folder, image_size=(8, 6))
    proba = np.array([rows[str(p)] for p in paths])
    np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_predict_folder_skips_unreadable_and_non_image_files(trained, tmp_path, capsys):
    _, folder, model = trained
    first, second = sorted(folder.rglob("*.png"))[:2]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(first, mixed / "a.png")
    shutil.copy(second, mixed / "B.PNG")  # the extension in any case
    (mixed / "0bad.png").write_bytes(b"not an image")
    (mixed / "notes.txt").write_text("not an image either")
    with pytest.warns(UserWarning, match="Skipped 1 unreadable image file"):
        assert main(["predict", str(model), str(mixed)]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert [Path(row[0]).name for row in rows[1:]] == ["B.PNG", "a.png"]


def test_predict_multilabel_model_lists_the_labels_present(tmp_path, capsys, digits):
    X, y = digits
    X, y = X[:150], y[:150]
    Y = np.c_[y % 2 == 0, y >= 5, np.isin(y, [2, 3, 5, 7])].astype(int)
    clf = SoftRegCNNClassifier(max_epochs=10, random_state=0, device="cpu",
                               module__channels=(4,), module__hidden_units=8).fit(X, Y)
    joblib.dump(clf, tmp_path / "ml.joblib")
    np.save(tmp_path / "x.npy", X[:30].reshape(-1, 1, 8, 8).astype(np.float32))
    assert main(["predict", str(tmp_path / "ml.joblib"), str(tmp_path / "x.npy")]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    expected = [" ".join(str(c) for c in clf.classes_[row == 1]) for row in clf.predict(X[:30])]
    assert {len(labels.split()) for labels in expected} != {1}  # not one label per row
    assert [row[1] for row in rows[1:]] == expected


@pytest.mark.parametrize("case, says", [
    ("missing", "does not exist"),
    ("empty", ""),
    ("not_a_model", "is not a sk_softreg model file"),
    ("wrong_object", "is not a fitted SoftRegCNNClassifier"),
    ("unfitted", "is not a fitted SoftRegCNNClassifier"),
    ("bad_input", "holds no images"),
    ("pickled_npy", "cannot read"),
    ("flat_npy", "Expected 2D array, got 1D array instead:"),  # the first line of a longer one
])
def test_input_errors_exit_2_with_one_line(trained, tmp_path, capsys, case, says):
    _, folder, model = trained
    if case == "missing":
        argv = ["fit", str(tmp_path / "nope"), "-o", str(tmp_path / "m.joblib")]
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        argv = ["fit", str(tmp_path / "empty"), "-o", str(tmp_path / "m.joblib")]
    elif case == "not_a_model":
        (tmp_path / "junk.joblib").write_bytes(b"definitely not a pickle")
        argv = ["info", str(tmp_path / "junk.joblib")]
    elif case == "wrong_object":
        joblib.dump({"a": 1}, tmp_path / "dict.joblib")
        argv = ["predict", str(tmp_path / "dict.joblib"), str(folder)]
    elif case == "unfitted":
        joblib.dump(SoftRegCNNClassifier(), tmp_path / "unfitted.joblib")
        argv = ["info", str(tmp_path / "unfitted.joblib")]
    elif case == "bad_input":
        (tmp_path / "empty2").mkdir()
        argv = ["predict", str(model), str(tmp_path / "empty2")]
    elif case == "pickled_npy":  # never unpickled (allow_pickle=False)
        np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
        argv = ["predict", str(model), str(tmp_path / "obj.npy")]
    else:
        np.save(tmp_path / "flat.npy", np.zeros(5, dtype=np.float32))
        argv = ["predict", str(model), str(tmp_path / "flat.npy")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("sk-softreg: error: ") and says in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "m.joblib").exists()


@pytest.mark.parametrize("command", ["fit", "predict", "export", "demo"])
@pytest.mark.parametrize("where, says", [("folder", "is a folder; give a file name"),
                                         ("no_parent", "does not exist")])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(
        trained, tmp_path, capsys, monkeypatch, command, where, says):
    _, folder, model = trained
    output = str(tmp_path) if where == "folder" else str(tmp_path / "nope" / "out.file")
    monkeypatch.setattr(SoftRegCNNClassifier, "fit", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr("sk_softreg._demo.run_demo", lambda **k: pytest.fail("searched"))
    argv = {"fit": ["fit", str(folder)], "predict": ["predict", str(model), str(folder)],
            "export": ["export", str(model)], "demo": ["demo"]}[command]
    assert main([*argv, "-o", output]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sk-softreg: error: ") and says in err and err.count("\n") == 1


def test_an_os_error_while_writing_exits_2_with_one_line(trained, tmp_path, capsys, monkeypatch):
    _, folder, model = trained

    target, real_open = str(tmp_path / "out.csv"), open

    def denied(file, *args, **kwargs):
        if str(file) == target:
            raise PermissionError(13, "Permission denied", target)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    assert main(["predict", str(model), str(folder), "-o", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sk-softreg: error: ") and "Permission denied" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_demo_function_small(tmp_path):
    import io

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from sk_softreg._demo import run_demo

    out = io.StringIO()
    result = run_demo({"lambda1": [0.0, 1e-2]}, max_epochs=1, cv=2, n_samples=200,
                      device="cpu", output=tmp_path / "d.joblib", file=out)
    text = out.getvalue()
    res = result["search"].cv_results_
    assert len(res["params"]) == 2
    # the table's zeros column: the sparsity of each candidate's fits
    assert res["mean_test_sparsity"][0] == 0.0 < res["mean_test_sparsity"][1]
    assert f"{res['mean_test_sparsity'][1]:.3f}" in text and "zeros" in text
    # the test accuracy is the saved best model's, on the held-out quarter
    X, y = load_digits(return_X_y=True)
    _, X_test, _, y_test = train_test_split(
        X[:200] / 16.0, y[:200], test_size=0.25, stratify=y[:200], random_state=0
    )
    saved = joblib.load(tmp_path / "d.joblib")
    assert result["test_accuracy"] == saved.score(X_test, y_test)
    assert f"test accuracy: {result['test_accuracy']:.4f}" in text
    assert f"sparsity (exact zeros among penalized weights): {saved.sparsity_:.4f}" in text


def test_console_entry_point_subprocess(trained):
    """One real process: the module runs as a script, progress bar on stderr."""
    tmp, folder, _ = trained
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    model = tmp / "sub.joblib"
    proc = subprocess.run(
        [sys.executable, "-m", "sk_softreg.cli", "fit", str(folder), "-o", str(model),
         "--epochs", "1", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "saved model to" in proc.stdout and "1/1" in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "sk_softreg.cli", "info", str(folder)],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_sparsest_within_one_se_picks_sparse_setting_only_when_accuracy_allows():
    from sk_softreg._demo import sparsest_within_one_se

    def results(means, sparsity, std=0.006):
        # three folds around each mean, spread so that std_test_accuracy == std
        splits = np.array([[m - std * np.sqrt(1.5), m, m + std * np.sqrt(1.5)] for m in means])
        res = {f"split{k}_test_accuracy": splits[:, k] for k in range(3)}
        res.update(mean_test_accuracy=splits.mean(1), std_test_accuracy=splits.std(1),
                   mean_test_sparsity=np.asarray(sparsity))
        return res

    # best 0.988, SE = 0.006 / sqrt(3) = 0.0035: 0.986 (0.45 zeros) is admissible
    assert sparsest_within_one_se(results([0.988, 0.986, 0.97], [0.0, 0.45, 0.8])) == 1
    # 0.980 is more than one SE below the best: keep the most accurate
    assert sparsest_within_one_se(results([0.988, 0.980, 0.97], [0.0, 0.45, 0.8])) == 0
    # equal sparsity: the higher accuracy wins
    assert sparsest_within_one_se(results([0.986, 0.988], [0.0, 0.0])) == 1
