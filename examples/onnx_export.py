"""Export fitted estimators to ONNX and check them against predict_proba / predict.

Fits four small models, exports each with ``est.export_onnx``, runs the file
with onnxruntime on held-out data and reports the largest absolute difference
from the estimator's own prediction:

- SoftRegCNNClassifier with the default CNN on digits (probabilities);
- SoftRegCNNClassifier(module="resnet18") on digits (probabilities);
- SoftRegRegressor on diabetes, 1-D y (mean and std, alpha=0.1);
- SoftRegRegressor on make_regression, 2-D y (mean and std, alpha=0: residual std).

Needs ``pip install -e ".[onnx]"``. Run::

    python examples/onnx_export.py --out docs/onnx
"""

import argparse
import csv
import os
import platform
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
from sklearn.datasets import load_diabetes, load_digits, make_regression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor


def onnx_outputs(est, X, folder):
    path = os.path.join(folder, f"{type(est).__name__}.onnx")
    est.export_onnx(path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {"X": np.asarray(X, dtype=np.float32)}), os.path.getsize(path)


def classifier_rows(folder):
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X / 16, y, test_size=300, stratify=y,
                                              random_state=0)
    rows = []
    for module, n_train, epochs in [(None, len(X_tr), 10), ("resnet18", 300, 2)]:
        clf = SoftRegCNNClassifier(module=module, alpha=0.1, max_epochs=epochs, random_state=0,
                                   device="cpu").fit(X_tr[:n_train], y_tr[:n_train])
        (proba,), size = onnx_outputs(clf, X_te.reshape(-1, *clf.input_shape_), folder)
        expected = clf.predict_proba(X_te)
        rows.append({
            "model": f"SoftRegCNNClassifier({module or 'default CNN'}), digits",
            "output": "probabilities",
            "test rows": len(X_te),
            "max abs diff": np.abs(proba - expected).max(),
            "same predicted class": f"{np.mean(proba.argmax(1) == expected.argmax(1)):.0%}",
            "file MB": size / 1e6,
        })
    return rows


def regressor_rows(folder):
    rows = []
    cases = [("diabetes, 1-D y", load_diabetes(return_X_y=True), 0.1),
             ("make_regression, 2-D y",
              make_regression(n_samples=500, n_features=8, n_targets=2, noise=10.0,
                              random_state=0), 0.0)]
    for name, (X, y), alpha in cases:
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0)
        scaler = StandardScaler().fit(X_tr)
        reg = SoftRegRegressor(alpha=alpha, module__hidden_units=(64,), module__dropout=0.0,
                               lr=1e-3, max_epochs=100, batch_size=32, random_state=0,
                               device="cpu").fit(scaler.transform(X_tr), y_tr)
        (mean, std), size = onnx_outputs(reg, scaler.transform(X_te), folder)
        exp_mean, exp_std = reg.predict(scaler.transform(X_te), return_std=True)
        for output, got, expected in (("mean", mean, exp_mean), ("std", std, exp_std)):
            rows.append({
                "model": f"SoftRegRegressor(alpha={alpha:g}), {name}",
                "output": f"{output} (y scale {float(np.max(reg.y_scale_)):.3g})",
                "test rows": len(X_te),
                "max abs diff": np.abs(got - expected).max(),
                "same predicted class": "",
                "file MB": size / 1e6,
            })
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for parity.csv and run.rst")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        rows = classifier_rows(folder) + regressor_rows(folder)
    seconds = time.perf_counter() - start
    header = list(rows[0])
    table = [[f"{r[k]:.1e}" if k == "max abs diff" else
              (f"{r[k]:.2f}" if isinstance(r[k], float) else r[k]) for k in header] for r in rows]
    for line in [header, *table]:
        print(" | ".join(map(str, line)))
    run = (f"Measured with ``python examples/onnx_export.py --out docs/onnx`` in {seconds:.0f} s "
           f"on {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
           f"onnxruntime {ort.__version__} (CPUExecutionProvider).\n")
    print(run)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "parity.csv"), "w", newline="") as f:
            csv.writer(f).writerows([header, *table])
        with open(os.path.join(args.out, "run.rst"), "w") as f:
            f.write(run)


if __name__ == "__main__":
    main()
