"""The Python examples of the README and the docs pages run as written.

Each page's Python blocks (README.md's ```python fences; the rst pages'
``.. code-block:: python`` blocks and ``::`` literal blocks that parse as Python)
run in order, in one namespace per page, as a reader following the page would
run them. The code is the page's, verbatim. Around it:

- ``load_digits(return_X_y=True)`` gives a stratified 200-image subset, so that the
  pages' searches run in seconds;
- ``CONTEXT`` defines what a page leaves to the reader (their own ``X`` and ``y``,
  an image dataset) before the block that needs it;
- ``CHECKS`` asserts what a block's comments promise, after the block;
- ``SKIP`` lists the blocks CI cannot run, each with its reason.

A block that fails names its page and line in the traceback. Entries of the three
tables are keyed by ``(page, the start of the block's first line)``; an entry that
matches no block fails ``test_every_table_entry_names_a_block``.
"""

import ast
import re
import textwrap
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import sklearn

ROOT = Path(__file__).resolve().parent.parent
DOCS_ROOT_FILES = ["README.md"] + sorted(
    p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.rst")
)


class Block(NamedTuple):
    page: str
    line: int  # 1-based line of the block's first code line
    code: str

    @property
    def first_line(self):
        return self.code.splitlines()[0]


def _is_python(code, fenced):
    """Whether a literal block is Python: it parses, and (unless the page said
    ``python``) it imports, assigns or calls something, so that a one-word shell
    command such as ``pytest`` does not count."""
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return fenced or bool(re.search(r"\bimport\b|=|\(", code))


def _markdown_blocks(page, lines):
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            j = i + 1
            while not lines[j].strip().startswith("```"):
                j += 1
            blocks.append(Block(page, i + 2, "\n".join(lines[i + 1 : j])))
            i = j
        i += 1
    return blocks


def _indent(line):
    return len(line) - len(line.lstrip())


def _rst_blocks(page, lines):
    blocks, i = [], 0
    while i < len(lines):
        stripped = lines[i].strip()
        directive = re.match(r"\.\. (code-block|code|sourcecode)::\s*(\S*)", stripped)
        literal = stripped.endswith("::") and not stripped.startswith("..")
        if not (directive or literal):
            i += 1
            continue
        base, j = _indent(lines[i]), i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j].strip().startswith(":")):
            j += 1  # blank lines and the directive's options
        start = j
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
            j += 1
        code = textwrap.dedent("\n".join(lines[start:j])).strip("\n")
        fenced = bool(directive) and directive.group(2) == "python"
        if start < j and (not directive or fenced) and _is_python(code, fenced):
            blocks.append(Block(page, start + 1, code))
        i = max(j, i + 1)
    return blocks


def python_blocks(page):
    """The Python blocks of ``page`` (a path relative to the repository root)."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    extract = _markdown_blocks if page.endswith(".md") else _rst_blocks
    return extract(page, lines)


PAGES = [page for page in DOCS_ROOT_FILES if python_blocks(page)]

# ----------------------------------------------------------------------
# what the pages leave to the reader, and what their comments promise

_DIABETES = """
from sklearn.datasets import load_diabetes
X, y = load_diabetes(return_X_y=True)
"""

_FRIEDMAN = """
from sklearn.datasets import make_friedman1
X, y = make_friedman1(n_samples=300, n_features=10, noise=1.0, random_state=0)
"""

_IMAGE_DATASETS = """
import torch
from sklearn.datasets import load_digits
from sk_softreg import SoftRegCNNClassifier
X, y = load_digits(return_X_y=True)
images = torch.tensor(X / 16, dtype=torch.float32).reshape(-1, 1, 8, 8)
image_dataset = torch.utils.data.TensorDataset(images[:150], torch.tensor(y[:150]))
test_dataset = torch.utils.data.TensorDataset(images[150:], torch.tensor(y[150:]))
"""

_IMAGE_FOLDER = """
from sklearn.model_selection import GridSearchCV
from sk_softreg.datasets import ImageFolderDataset
from _image_folder import make_image_folder
image_dataset = ImageFolderDataset(make_image_folder(tmp_path / "train", n_per_class=8, size=8))
grid = {"alpha": [0.0, 0.1]}
"""

CONTEXT = {
    ("docs/distributed.rst", "clf = SoftRegCNNClassifier(classes="): _IMAGE_DATASETS,
    ("docs/distributed.rst", "from skorch.helper import SliceDataset"): _IMAGE_FOLDER,
    ("docs/feature_selection.rst", "from sklearn.feature_selection"): _FRIEDMAN,
    ("docs/onnx.rst", "import numpy as np"): """
from sklearn.datasets import load_digits
from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor
X, y = load_digits(return_X_y=True)
X = X / 16
clf = SoftRegCNNClassifier(max_epochs=2, random_state=0).fit(X, y)
reg = SoftRegRegressor(alpha=0.1, max_epochs=5, random_state=0).fit(X, y.astype(float))
""",
    ("docs/selecting_inputs.rst", "from sklearn.pipeline import make_pipeline"): _FRIEDMAN,
    ("docs/user_guide.rst", "from sklearn.metrics import f1_score"): "X_new = X[:5]",
    ("docs/user_guide.rst", "from mapie.regression import SplitConformalRegressor"): (
        _DIABETES
        + "from sklearn.model_selection import train_test_split\n"
        "X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)\n"
    ),
    ("docs/user_guide.rst", "import sklearn"): _DIABETES
    + "w = np.random.default_rng(0).uniform(0.5, 2.0, len(y))\n",
    ("docs/user_guide.rst", "from sklearn.experimental import enable_halving"): """
from sklearn.datasets import load_digits
from sk_softreg import SoftRegCNNClassifier
X, y = load_digits(return_X_y=True)
X = X / 16
""",
    ("docs/user_guide.rst", "import joblib"): "proba_before = clf.predict_proba(X[:5] / 16)",
}

CHECKS = {
    ("docs/distributed.rst", "clf = SoftRegCNNClassifier(classes="): """
assert clf.predict(test_dataset).shape == (len(test_dataset),)
""",
    ("docs/distributed.rst", "from skorch.helper import SliceDataset"): """
assert len(X_sl) == len(y) == len(image_dataset) == 24
np.testing.assert_array_equal(y, [image_dataset[i][1] for i in range(len(y))])
""",
    ("docs/feature_selection.rst", "from sklearn.feature_selection"): """
assert 1 <= reg.n_features_selected_ <= X.shape[1]
assert pipe[1].transform(X).shape[1] == pipe[1].estimator_.n_features_selected_
""",
    ("docs/onnx.rst", "import numpy as np"): """
np.testing.assert_allclose(proba, clf.predict_proba(X), atol=1e-5)
np.testing.assert_array_equal(labels, clf.predict(X))
expected_mean, expected_std = reg.predict(X, return_std=True)
np.testing.assert_allclose(mean.ravel(), expected_mean, rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(std.ravel(), expected_std, rtol=1e-4, atol=1e-4)
""",
    ("docs/quickstart.rst", "from sklearn.datasets import load_diabetes"): """
assert mean.shape == std.shape == (5,) and (std > 0).all()
""",
    ("docs/user_guide.rst", "import numpy as np"): """
assert clf.predict_proba(X[:2] / 16).shape == (2, 3)
assert clf.predict(X[:2] / 16).dtype == Y.dtype
""",
    ("docs/user_guide.rst", "from mapie.regression import SplitConformalRegressor"): """
assert intervals.shape == (len(X_test), 2, 1)
assert (intervals[:, 0, 0] <= mean).all() and (mean <= intervals[:, 1, 0]).all()
""",
    ("docs/user_guide.rst", "import joblib"): """
np.testing.assert_array_equal(clf.predict_proba(X[:5] / 16), proba_before)
""",
}

SKIP = {
    ("docs/distributed.rst", "import joblib"): (
        "needs the reader's Dask scheduler at tcp://host:8786; tests/test_distributed.py "
        "runs a search over a LocalCluster through joblib's dask backend"
    ),
    ("docs/distributed.rst", "from accelerate import Accelerator"): (
        "process-wide Accelerate state, and bf16 on CPUs without bfloat16 instructions is "
        "slow; tests/test_accelerate.py covers bf16 and gradient accumulation"
    ),
}


def _entry(table, block):
    for (page, start), value in table.items():
        if page == block.page and block.first_line.startswith(start):
            return value
    return None


# the optional packages a page's examples import (all in the ``dev`` extra)
PAGE_NEEDS = {
    "docs/onnx.rst": ["onnx", "onnxscript", "onnxruntime"],
    "docs/quickstart.rst": ["matplotlib"],
    "docs/user_guide.rst": ["mapie"],
}


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page, tmp_path, monkeypatch, shrink_digits):
    for module in PAGE_NEEDS.get(page, []):
        pytest.importorskip(module)
    if page == "docs/quickstart.rst":
        import matplotlib

        matplotlib.use("Agg")
    shrink_digits(200)
    monkeypatch.chdir(tmp_path)  # the files the examples write
    namespace = {"tmp_path": tmp_path, "np": np}
    # a page may set scikit-learn's global config (metadata routing): restore it after
    with sklearn.config_context():
        for block in python_blocks(page):
            if _entry(SKIP, block) is not None:
                continue
            exec(_entry(CONTEXT, block) or "", namespace)
            exec(compile(block.code, f"{page}:{block.line}", "exec"), namespace)
            exec(_entry(CHECKS, block) or "", namespace)
    if page == "docs/quickstart.rst":
        import matplotlib.pyplot as plt

        plt.close("all")


def test_every_table_entry_names_a_block():
    blocks = [block for page in PAGES for block in python_blocks(page)]
    for table in (CONTEXT, CHECKS, SKIP):
        for page, start in table:
            matches = [b for b in blocks if b.page == page and b.first_line.startswith(start)]
            assert len(matches) == 1, (page, start, len(matches))


def test_the_extraction_finds_what_the_pages_hold():
    # the pages this file reads, and what it must not take for Python
    assert "README.md" in PAGES and "docs/quickstart.rst" in PAGES
    quickstart = python_blocks("docs/quickstart.rst")
    assert quickstart[0].first_line == "from sklearn.datasets import load_digits"
    assert all(not b.code.startswith(("pip ", "python ", "sk-softreg")) for p in PAGES
               for b in python_blocks(p))
    # a literal block that is a shell command, or a one-word one, is not Python
    assert not _is_python("pip install -e .", fenced=False)
    assert not _is_python("pytest", fenced=False)
    assert _is_python("pytest", fenced=True)
