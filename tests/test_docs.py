"""Documentation checks: every public parameter is documented, HTML repr, show_versions."""

import importlib.util
import inspect
from pathlib import Path

import pytest
from skorch import NeuralNet

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor, show_versions

numpydoc_docscrape = pytest.importorskip("numpydoc.docscrape")

ESTIMATORS = [SoftRegCNNClassifier, SoftRegRegressor]


def _documented_params(cls):
    doc = numpydoc_docscrape.ClassDoc(cls, config={"show_class_members": False})
    names = set()
    for param in doc["Parameters"]:
        # "y_mean_, y_scale_"-style groups document several names at once
        names.update(name.strip() for name in param.name.split(","))
    return names


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_every_init_parameter_is_documented(cls):
    signature = inspect.signature(cls.__init__)
    explicit = {
        name
        for name, p in signature.parameters.items()
        if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    }
    documented = _documented_params(cls)
    assert explicit - documented == set(), "undocumented parameters"
    # no stale entries: everything documented exists (**kwargs covers skorch's)
    assert documented - explicit - {"**kwargs"} == set(), "documented but not accepted"
    assert "**kwargs" in documented


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_params_beyond_the_signature_are_skorch_params(cls):
    # get_params also reports skorch's own parameters; they are the ones
    # ``**kwargs`` documents. A new sk_softreg parameter must be explicit.
    explicit = set(inspect.signature(cls.__init__).parameters)
    skorch_params = set()
    for base in cls.__mro__:
        if issubclass(base, NeuralNet) and base.__module__.startswith("skorch"):
            skorch_params |= set(inspect.signature(base.__init__).parameters)
    extra = set(cls().get_params(deep=False)) - explicit
    assert extra <= skorch_params


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_html_repr(cls):
    html = cls(lambda1=1e-4)._repr_html_()
    assert cls.__name__ in html
    assert "lambda1" in html


def test_show_versions_prints_the_versions(capsys):
    import sklearn
    import skorch
    import torch

    import sk_softreg

    show_versions()
    out = capsys.readouterr().out
    for expected in (sk_softreg.__version__, torch.__version__, skorch.__version__,
                     sklearn.__version__, "CUDA", "available"):
        assert expected in out


def _load_docs_check():
    path = Path(__file__).resolve().parent.parent / ".ci" / "build_docs.py"
    spec = importlib.util.spec_from_file_location("_build_docs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "html, problem",
    [
        ('<div class="system-message">x</div>', "docutils error"),
        ('<nav class="contents">x</nav>', "furo's contents error"),
        ('<script src="https://cdn.example.org/mathjax.js"></script>', "remote script"),
        ('<script src="_static/mathjax/tex-chtml.js"></script><p>ok</p>', None),
    ],
)
def test_docs_check_finds_error_boxes_and_remote_scripts(tmp_path, html, problem):
    (tmp_path / "page.html").write_text(f"<html><body>{html}</body></html>", encoding="utf-8")
    found = _load_docs_check().error_boxes(tmp_path)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and problem in found[0][1]
