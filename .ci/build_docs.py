"""Build the docs as a fresh ``pip install -e ".[docs]"`` would, then check the pages.

Usage: ``python .ci/build_docs.py OUTDIR``; silent on success.

1. CI installs every extra (``[dev]``), so a docs import that only another extra
   satisfies would pass CI and fail for a user who follows the README. Without
   creating a second environment, this script makes unimportable, for the
   build, every installed distribution that the other extras need and the core
   dependencies plus ``[docs]`` do not (transitively, read from pyproject.toml
   and the installed metadata). ``conf.py``'s ``autodoc_mock_imports`` must cover
   what the docs import from those.
2. ``sphinx-build -W -q -b html docs OUTDIR``.
3. ``-W`` lets some errors through into the HTML: docutils' system messages
   and "problematic" references, and furo's red "ERROR: Adding a table of
   contents ..." box for a ``.. contents::`` directive. Every page is scanned
   for them.
"""

import sys
from html.parser import HTMLParser
from importlib import metadata
from importlib.machinery import PathFinder
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# furo's escape hatch for a deliberate ``.. contents::``
FURO_TOC_OK = "this-will-duplicate-information-and-it-is-still-useful-here"


def _closure(requirements):
    """Canonical names of the installed distributions ``requirements`` need, transitively."""
    extras_of = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        known = extras_of.get(name)
        if known is not None and set(req.extras) <= known:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        extras_of.setdefault(name, set()).update(req.extras)
        for text in dist.requires or []:
            sub = Requirement(text)
            wanted = {""} | extras_of[name]
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(sub)
    return set(extras_of)


def blocked_modules():
    """Top-level modules of the distributions that only the non-docs extras bring."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    needed = _closure(project["dependencies"] + extras["docs"])
    others = _closure([r for name, reqs in extras.items() if name != "docs" for r in reqs])
    only_others = others - needed
    modules = {}
    for module, dists in metadata.packages_distributions().items():
        names = {canonicalize_name(d) for d in dists}
        modules[module] = names <= only_others
    return sorted(m for m, blocked in modules.items() if blocked and m.isidentifier())


class _HidingPathFinder(PathFinder):
    """The standard path finder, blind to some top-level packages: they look not
    installed (``importlib.util.find_spec`` gives None, ``import`` fails)."""

    hidden = frozenset()

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname.split(".")[0] in cls.hidden:
            return None
        return super().find_spec(fullname, path, target)


class _ErrorBoxes(HTMLParser):
    """Collects the elements that render as an error box, and remote scripts."""

    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        source = attrs.get("src") or ""
        if tag == "script" and source.startswith(("http:", "https:", "//")):
            # e.g. MathJax from a CDN: offline, formulas would show as raw TeX
            self.found.append(f"<script src={source!r}> (remote script: renders only online)")
        elif "system-message" in classes or "problematic" in classes:
            self.found.append(f"<{tag} class={' '.join(sorted(classes))!r}> (docutils error)")
        elif "contents" in classes and FURO_TOC_OK not in classes:
            self.found.append(f"<{tag} class={' '.join(sorted(classes))!r}> (furo's contents error)")


def error_boxes(outdir):
    """``(page, element)`` for every error box in the built HTML under ``outdir``."""
    problems = []
    for page in sorted(Path(outdir).rglob("*.html")):
        parser = _ErrorBoxes()
        parser.feed(page.read_text(encoding="utf-8"))
        problems += [(page.relative_to(outdir), box) for box in parser.found]
    return problems


def main(argv):
    outdir = Path(argv[0]) if argv else ROOT / "docs" / "_build" / "html"
    names = blocked_modules()
    for name in [m for m in sys.modules if m.split(".")[0] in names]:
        del sys.modules[name]
    _HidingPathFinder.hidden = frozenset(names)
    sys.meta_path[:] = [_HidingPathFinder if f is PathFinder else f for f in sys.meta_path]

    from sphinx.cmd.build import build_main

    status = build_main(["-W", "-q", "-b", "html", str(ROOT / "docs"), str(outdir)])
    if status:
        print(
            "The docs build failed without these modules, which only extras other than "
            f"[docs] install: {', '.join(names)}. Mock such imports in docs/conf.py "
            "(autodoc_mock_imports) or add the package to the [docs] extra.",
            file=sys.stderr,
        )
        return status
    problems = error_boxes(outdir)
    for page, box in problems:
        print(f"{page}: {box}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} error box(es) in the built docs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
