"""The scripts in ``examples/`` run to the end, on small data.

Each script runs in this process as ``python examples/NAME.py ARGS`` would run it
(``runpy``, ``__name__ == "__main__"``), in a temporary folder, with the data it
loads cut down: ``load_digits(return_X_y=True)`` gives a stratified subset and
``make_friedman1`` at most 200 rows. The files a script writes are checked, and
what a script changes in the process (torch's thread count, Accelerate's state,
open figures) is put back.
"""

import csv
import runpy
import sys
from pathlib import Path

import pytest
import sklearn.datasets
import torch

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"

# name: (command-line arguments, digits kept (None: left alone), files written,
#        optional packages)
EXAMPLES = {
    "accelerate_train": (["--epochs", "1"], 200, [], ["accelerate"]),
    "dask_search": (["--epochs", "1"], 200, [], ["distributed"]),
    "digits_gridsearch": (
        ["--max-epochs", "2", "--cv", "2", "--n-jobs", "1", "--out", "model.joblib"], 200,
        ["model.joblib"], [],
    ),
    "feature_selection_friedman": (
        ["--quick", "--out", "out"], None, ["out/results.md"], ["matplotlib"]
    ),
    # its own split holds out 300 test images
    "onnx_export": (["--out", "out"], 700, ["out/parity.csv", "out/run.rst"],
                    ["onnx", "onnxscript", "onnxruntime", "torchvision"]),
    "plot_softreg_digits": ([], 200, ["softreg_digits.png"], ["matplotlib"]),
    "selector_friedman": (["--out", "out"], None, ["out/selector_cv.png"], ["matplotlib"]),
}

# the examples other tests run (in --quick mode, with their outputs checked)
RUN_ELSEWHERE = {
    "regularization_study": "tests/test_studies.py (--quick)",
    "uncertainty_regression": "tests/test_studies.py (--quick)",
}


def test_every_example_is_run():
    scripts = {path.stem for path in EXAMPLES_DIR.glob("*.py")}
    assert scripts == set(EXAMPLES) | set(RUN_ELSEWHERE)


@pytest.fixture
def process_state():
    """Put back what the scripts change for the whole process."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
    if "accelerate.state" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def _small_friedman(monkeypatch):
    make_friedman1 = sklearn.datasets.make_friedman1

    def friedman_small(n_samples=100, *args, **kwargs):
        return make_friedman1(min(n_samples, 200), *args, **kwargs)

    monkeypatch.setattr(sklearn.datasets, "make_friedman1", friedman_small)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs(name, tmp_path, monkeypatch, process_state, shrink_digits, capsys):
    argv, n_digits, files, needs = EXAMPLES[name]
    for module in needs:
        pytest.importorskip(module)
    if "matplotlib" in needs:
        import matplotlib

        matplotlib.use("Agg")
    if "accelerate" in needs:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    if n_digits is not None:
        shrink_digits(n_digits)
    _small_friedman(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *argv])
    runpy.run_path(str(EXAMPLES_DIR / f"{name}.py"), run_name="__main__")
    for file in files:
        assert (tmp_path / file).stat().st_size > 0, file
    if name == "onnx_export":
        # parity.csv: the largest difference of each ONNX output from the estimator's own
        with open(tmp_path / "out/parity.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 6
        assert all(float(row["max abs diff"]) < 1e-3 for row in rows)
    out = capsys.readouterr().out
    if name in ("accelerate_train", "dask_search", "digits_gridsearch", "plot_softreg_digits"):
        assert "test accuracy" in out
