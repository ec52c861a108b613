"""Smoke tests: both example studies run end to end in --quick mode (as the issue asks) and write their outputs."""

import csv
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_study_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def regularization():
    return _load("regularization_study")


@pytest.fixture(scope="module")
def uncertainty():
    return _load("uncertainty_regression")


def test_ece_perfect_and_overconfident(regularization):
    ece = regularization.expected_calibration_error
    y = np.array([0, 1, 1, 0])
    onehot = np.eye(2)[y]
    assert ece(y, onehot) == 0.0
    # Always 90% confident, right half the time: ECE = 0.4.
    proba = np.tile([0.9, 0.1], (4, 1))
    assert ece(y, proba) == pytest.approx(0.4)


def test_gaussian_metrics_coverage(uncertainty):
    rng = np.random.default_rng(0)
    y = rng.normal(size=20000)
    m = uncertainty.gaussian_metrics(y, np.zeros_like(y), np.ones_like(y))
    assert m["coverage90"] == pytest.approx(0.9, abs=0.01)
    assert m["nll"] == pytest.approx(0.5 * np.log(2 * np.pi) + 0.5, abs=0.02)
    wide = uncertainty.gaussian_metrics(y, np.zeros_like(y), 3 * np.ones_like(y))
    assert wide["coverage90"] > 0.99 and wide["nll"] > m["nll"]


def test_regularization_study_quick_mode(regularization, tmp_path):
    out = regularization.main(["--quick", "--out", str(tmp_path)])
    for name in (
        "results.md",
        "summary.csv",
        "calibration.csv",
        "raw.csv",
        "findings.rst",
        "accuracy_vs_size.png",
        "accuracy_vs_sparsity_l1.png",
    ):
        assert (out / name).stat().st_size > 0, name
    with open(out / "summary.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    configs = {r["config"] for r in rows}
    assert {"none", "l1=1e-4", "ls a=0.1", "cp a=0.1", "ls a=0.1 + aug", "cv-selected"} <= configs
    assert len(rows) == len(configs) * 3  # three training sizes per configuration
    l1 = [r for r in rows if r["config"] == "l1=1e-4"]
    assert all(float(r["zero weights"].rstrip("%")) > 0 for r in l1)
    # the "what to use" finding names the setting that cross-validation chose,
    # and the cv-selected rows are fits of exactly that setting (same seeds)
    findings = (out / "findings.rst").read_text(encoding="utf-8")
    chosen = re.search(r"\(``(.+?)`` in the tables\)", findings).group(1)
    assert chosen in {"ls a=0.1", "ls a=0.1 + aug"}  # the quick mode's two CV candidates
    with open(out / "raw.csv", encoding="utf-8") as fh:
        raw = list(csv.DictReader(fh))

    def fits(name):
        return {(r["subset"], r["seed"]): r["accuracy"] for r in raw if r["config"] == name}

    assert len(fits("cv-selected")) == 6 and fits("cv-selected") == fits(chosen)


def test_uncertainty_regression_quick_mode(uncertainty, tmp_path):
    out = uncertainty.main(["--quick", "--out", str(tmp_path)])
    for name in ("results.md", "results.csv", "goal.rst", "synthetic_band.png"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "results.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 3 * 2  # data sets x alphas x taus
    assert {r["data"] for r in rows} == {"synthetic", "diabetes"}
    metrics = ("rmse", "nll", "coverage90")
    for data in ("synthetic", "diabetes"):
        by_setting = {(r["alpha"], r["tau"]): [r[m] for m in metrics] for r in rows if r["data"] == data}
        # tau only enters through the KL term: the two alpha = 0 rows are one model,
        # and with alpha > 0 tau changes the fit
        assert by_setting[("0.0000", "0.0500")] == by_setting[("0.0000", "0.2000")]
        assert by_setting[("1.0000", "0.0500")] != by_setting[("1.0000", "0.2000")]
