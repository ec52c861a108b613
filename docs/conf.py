"""Sphinx configuration for the sk_softreg documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors).
No network access is needed: intersphinx is off.
"""

import importlib.util
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import sk_softreg

project = "sk_softreg"
author = "sk_softreg developers"
copyright = "2026, sk_softreg developers"
version = release = sk_softreg.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    # ships MathJax with the built pages: formulas render offline, without a CDN
    "sphinx-mathjax-offline",
    "numpydoc",
]

autosummary_generate = True
# The optional extras that API pages import: mocked when they are not installed,
# so that the docs build with only ``pip install -e ".[docs]"`` (.ci/build_docs.py
# checks this). Installed, they are imported for real (full signatures).
autodoc_mock_imports = [
    name for name in ("accelerate", "distributed") if importlib.util.find_spec(name) is None
]
autodoc_default_options = {"members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

templates_path = ["_templates"]
exclude_patterns = ["_build", "study/findings.rst", "uncertainty/goal.rst"]
html_theme = "furo"
html_title = f"sk_softreg {release}"
# the examples are shown as source; docs/_build and generated/ are build outputs
suppress_warnings = []
