"""A safe file format for sharing fitted sk_softreg estimators.

One safetensors file holds

- the weights of the registered modules and criteria (``module.*``,
  ``criterion.*``, ...) as raw tensors;
- a JSON config in the safetensors metadata (key ``"sk_softreg"``): format
  version, estimator class, the parameters that JSON can hold, the fitted
  attributes (``classes_``, ``input_shape_``, ``n_features_in_``, ``y_mean_``,
  ...) and a SHA-256 digest of the tensor bytes.

Loading parses that header and copies raw bytes: nothing is unpickled. Classes
(``module``, ``criterion``, ``optimizer``, a class-valued ``penalize``) are
stored as import paths and imported on load only from ``torch``, ``skorch``,
``sk_softreg`` and the modules the caller trusts explicitly, because importing
a module runs its code.
"""

import hashlib
import importlib
import json
import numbers
import os

import numpy as np
import torch

from ._batch_loop import BatchHistory
from ._exceptions import ModelFileError
from ._warnings import warn

__all__ = ["load", "save"]

FORMAT_NAME = "sk_softreg"
FORMAT_VERSION = 1
_ALLOWED_MODULES = ("torch", "skorch", "sk_softreg")
#: the kinds of class a model file may name (as a module, criterion, optimizer,
#: dataset or iterator parameter, or one of their ``__`` arguments)
_CLASS_KINDS = (
    torch.nn.Module,
    torch.optim.Optimizer,
    torch.utils.data.Dataset,
    torch.utils.data.DataLoader,
)
# skorch bookkeeping that ``initialize`` rebuilds
_SKORCH_STATE = {
    "history_", "initialized_", "virtual_params_", "init_context_", "callbacks_",
    "prefixes_", "cuda_dependent_attributes_",
}


# The estimator classes a file may name, by import path: this module resolves
# them on load and never imports them itself, so the dependency runs one way
# (estimators -> _base -> _persistence).
_ESTIMATOR_CLASSES = {
    "SoftRegCNNClassifier": "sk_softreg._classifier.SoftRegCNNClassifier",
    "SoftRegRegressor": "sk_softreg._regressor.SoftRegRegressor",
}


# ----------------------------------------------------------------------
# JSON encoding of parameter and attribute values
class _Unencodable(Exception):
    pass


def _encode(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, torch.device):  # device=torch.device("cuda", 1): kept as "cuda:1"
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode(v) for k, v in value.items()}}
    if isinstance(value, dict):  # e.g. class_weight={0: 1.0, 1: 5.0}
        return {"__items__": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufUO":
            raise _Unencodable
        items = [_encode(v.item() if hasattr(v, "item") else v) for v in value.ravel()]
        return {"__ndarray__": items, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, type):
        path = f"{value.__module__}.{value.__qualname__}"
        if "<" in path or _import_object(path, allowed=None) is not value:
            raise _Unencodable
        return {"__class__": path}
    raise _Unencodable


def _decode(value, trusted):
    if isinstance(value, list):
        return [_decode(v, trusted) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(_decode(v, trusted) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: _decode(v, trusted) for k, v in value["__dict__"].items()}
    if "__items__" in value:
        return {_decode(k, trusted): _decode(v, trusted) for k, v in value["__items__"]}
    if "__ndarray__" in value:
        dtype = np.dtype(value["dtype"])
        if dtype.kind not in "biufUO":
            raise ModelFileError(f"Unsupported array dtype {value['dtype']!r} in the config.")
        items = [_decode(v, trusted) for v in value["__ndarray__"]]
        arr = np.empty(len(items), dtype=dtype)
        arr[:] = items
        return arr.reshape(value["shape"])
    if "__class__" in value:
        return _decode_class(value["__class__"], allowed=(*_ALLOWED_MODULES, *trusted))
    raise ModelFileError(f"Unknown value {value!r} in the config.")


def _decode_class(path, allowed):
    """The class at ``path``, as :func:`_encode` writes one: only a class of
    :data:`_CLASS_KINDS`, named by its own module and qualified name.

    A name that reaches something else through an allowed package (for example
    ``torch.serialization.os.system``, a function of ``os`` imported there, or a torch
    class that reads files when built) is refused before anything is called.
    """
    obj = _import_object(path, allowed)
    if (
        not isinstance(obj, type)
        or f"{obj.__module__}.{obj.__qualname__}" != path
        or not issubclass(obj, _CLASS_KINDS)
    ):
        raise ModelFileError(
            f"The model file names {path!r}, which is not a network, loss, optimizer, "
            "dataset or data loader class under its own name; it is not loaded."
        )
    return obj


def _import_object(path, allowed):
    """Import ``module.qualname``; with ``allowed``, only from those top-level packages."""
    if allowed is not None and path.split(".")[0] not in allowed:
        raise ModelFileError(
            f"The model file refers to {path!r}, outside the allowed modules {sorted(allowed)}. "
            f"Pass trusted_modules=[{path.split('.')[0]!r}] to sk_softreg.load if you trust it."
        )
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ModelFileError(f"Cannot import {path!r} named in the model file.")


# ----------------------------------------------------------------------
def _state_tensors(est):
    tensors = {}
    for name in [*est._modules, *est._criteria]:
        obj = getattr(est, name + "_", None)
        if isinstance(obj, torch.nn.Module):
            for key, t in obj.state_dict().items():
                tensors[f"{name}.{key}"] = t.detach().to("cpu").contiguous()
    return tensors


def _digest(tensors):
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save(estimator, path):
    """Save a fitted sk_softreg estimator to ``path`` (see the module docstring).

    Parameters
    ----------
    estimator : SoftRegCNNClassifier or SoftRegRegressor
        A fitted estimator whose ``module`` is a class (not an instance).
    path : str or os.PathLike

    Raises
    ------
    NotFittedError
        If the estimator is not fitted.
    ValueError
        If a parameter needed to rebuild the network cannot be stored.
    """
    from safetensors.torch import save_file
    from sklearn.utils.validation import check_is_fitted

    cls = type(estimator)
    if _ESTIMATOR_CLASSES.get(cls.__name__) != f"{cls.__module__}.{cls.__qualname__}":
        raise TypeError(f"save supports {sorted(_ESTIMATOR_CLASSES)}, got {cls.__name__}.")
    check_is_fitted(estimator)

    params, dropped = {}, []
    for key, value in estimator.get_params(deep=False).items():
        try:
            params[key] = _encode(value)
        except _Unencodable:
            if key.startswith(("module", "criterion")) and value is not None:
                raise ValueError(
                    f"Cannot save parameter {key}={value!r}: only module, criterion and "
                    "module__*/criterion__* values that are importable classes, numbers, strings, "
                    "tuples or lists can be stored in the safe format."
                ) from None
            dropped.append(key)
    if dropped:
        warn(f"Not saved (JSON cannot hold them; they get their defaults on load): {sorted(dropped)}.")

    fitted = {}
    for key, value in vars(estimator).items():
        if key in _SKORCH_STATE or not key.endswith("_") or key.startswith("_"):
            continue
        if any(key == name + "_" for name in [*estimator._modules, *estimator._criteria,
                                              *estimator._optimizers]):
            continue
        try:
            fitted[key] = _encode(value)
        except _Unencodable:
            warn(f"Fitted attribute {key!r} cannot be saved and is dropped.")
    for key in ("_y_1d", "_n_fit_rows", "_y_dtype"):
        if hasattr(estimator, key):
            fitted[key] = _encode(getattr(estimator, key))

    tensors = _state_tensors(estimator)
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "class": type(estimator).__name__,
        "params": params,
        "fitted": fitted,
        "history": _history(estimator),
        "sha256": _digest(tensors),
    }
    save_file(tensors, os.fspath(path), metadata={FORMAT_NAME: json.dumps(config)})


def _history(estimator):
    try:
        return json.loads(json.dumps(estimator.history_.to_list()))
    except (TypeError, ValueError):
        return None


def load(path, *, device=None, trusted_modules=()):
    """Load an estimator saved with ``est.save(path)``.

    Nothing is unpickled: the file is a safetensors file whose header carries
    a JSON config. A file in any other format, or a truncated or corrupted one,
    raises :class:`~sk_softreg.ModelFileError`.

    Parameters
    ----------
    path : str or os.PathLike
    device : str or torch.device, default=None
        Device to load onto. ``None`` uses the saved ``device`` parameter, or
        ``"cpu"`` (with a warning) when it names CUDA and CUDA is not available.
    trusted_modules : str or sequence of str, default=()
        Top-level packages besides ``torch``, ``skorch`` and ``sk_softreg`` from which the
        saved module/criterion/optimizer classes may be imported. Whatever the
        package, only network, loss, optimizer, dataset and data-loader classes
        are loaded, under their own names.

    Returns
    -------
    estimator : SoftRegCNNClassifier or SoftRegRegressor
        Fitted, ready to predict. The optimizer state is not saved: further
        training (``partial_fit``) starts a fresh optimizer.

    Examples
    --------
    >>> import os, tempfile
    >>> from sklearn.datasets import make_regression
    >>> from sk_softreg import SoftRegRegressor, load
    >>> X, y = make_regression(n_samples=50, n_features=3, random_state=0)
    >>> reg = SoftRegRegressor(max_epochs=2, random_state=0, device="cpu").fit(X, y)
    >>> path = os.path.join(tempfile.mkdtemp(), "reg.safetensors")
    >>> _ = reg.save(path)
    >>> bool((load(path).predict(X) == reg.predict(X)).all())
    True
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not iterable)
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(
            f"{path!r} is not a readable sk_softreg model file (expected a safetensors file "
            f"written by est.save; it may be truncated, corrupted or in another format such "
            f"as a pickle, which is never loaded): {exc}"
        ) from None
    try:
        config = json.loads(metadata[FORMAT_NAME])
        if config.get("format") != FORMAT_NAME:
            raise KeyError("format")
    except (KeyError, ValueError, TypeError):
        raise ModelFileError(f"{path!r} is a safetensors file but carries no sk_softreg config.") from None
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path!r} uses format version {config['format_version']}; this sk_softreg reads "
            f"up to {FORMAT_VERSION}. Upgrade sk_softreg."
        )
    if _digest(tensors) != config.get("sha256"):
        raise ModelFileError(f"{path!r} is corrupted: the weights do not match their checksum.")

    if config.get("class") not in _ESTIMATOR_CLASSES:
        raise ModelFileError(f"Unknown estimator class {config.get('class')!r} in {path!r}.")
    cls = _import_object(_ESTIMATOR_CLASSES[config["class"]], allowed=("sk_softreg",))
    if isinstance(trusted_modules, str):  # one package, not its letters
        trusted_modules = (trusted_modules,)
    trusted_modules = tuple(trusted_modules)
    params = {k: _decode(v, trusted_modules) for k, v in config["params"].items()}
    params["device"] = _load_device(params.get("device", "auto"), device)

    est = cls(**params)
    for key, value in config["fitted"].items():
        setattr(est, key, _decode(value, trusted_modules))
    est.initialize()
    for name in [*est._modules, *est._criteria]:
        obj = getattr(est, name + "_", None)
        if not isinstance(obj, torch.nn.Module):
            continue
        prefix = name + "."
        state = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
        try:
            obj.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelFileError(f"The weights in {path!r} do not fit the network: {exc}") from None
    if config.get("history") is not None:
        est.history_ = BatchHistory(config["history"])
    return est


def _load_device(saved, requested):
    if requested is not None:
        return requested
    # "auto" and None pick a device that exists at load time
    if saved is None or saved == "auto":
        return saved
    if torch.device(saved).type == "cuda" and not torch.cuda.is_available():
        warn(f"The model was saved with device={saved!r}, but CUDA is not available; loading on the CPU.")
        return "cpu"
    return saved
