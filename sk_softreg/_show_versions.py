"""``show_versions``: the versions to paste into a bug report."""

import importlib
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

__all__ = ["show_versions"]

# distribution name -> import name
_DEPENDENCIES = {
    "torch": "torch",
    "skorch": "skorch",
    "scikit-learn": "sklearn",
    "numpy": "numpy",
    "scipy": "scipy",
    "torchvision": "torchvision",
    "matplotlib": "matplotlib",
    "numba": "numba",
}


def _package_version(name, module):
    """The imported module's ``__version__`` (e.g. torch's ``+cu`` tag), else metadata."""
    try:
        return importlib.import_module(module).__version__
    except (ImportError, AttributeError):
        pass
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _get_versions():
    """Return a dict of dicts: ``system``, ``dependencies`` and ``cuda``."""
    from . import __version__

    system = {
        "sk_softreg": __version__,
        "python": sys.version.replace("\n", " "),
        "executable": sys.executable,
        "machine": platform.platform(),
    }
    dependencies = {name: _package_version(name, mod) for name, mod in _DEPENDENCIES.items()}
    cuda = {"available": False, "torch CUDA build": None, "devices": None}
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    else:
        available = torch.cuda.is_available()
        cuda = {
            "available": available,
            "torch CUDA build": torch.version.cuda,
            "devices": (
                ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
                if available
                else None
            ),
        }
    return {"System": system, "Python dependencies": dependencies, "CUDA": cuda}


def show_versions():
    """Print the versions of sk_softreg, its dependencies, Python and CUDA.

    Paste the output into bug reports. Printing is this function's purpose;
    the estimators themselves never print unless ``verbose`` is set.

    Examples
    --------
    >>> from sk_softreg import show_versions
    >>> show_versions()  # doctest: +ELLIPSIS
    <BLANKLINE>
    System:
    ...
    """
    for section, values in _get_versions().items():
        print(f"\n{section}:")
        width = max(len(key) for key in values)
        for key, value in values.items():
            print(f"{key:>{width}}: {value}")
