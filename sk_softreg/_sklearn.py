"""scikit-learn plumbing of the estimators: ``device``, parameters, pickling, saving.

:class:`SklearnPlumbingMixin` makes a ``skorch.NeuralNet`` subclass behave as
scikit-learn expects of an estimator's parameters: ``get_params`` lists only
``__init__`` arguments (``device`` as given, ``"auto"`` included),
``set_params`` stores ``callbacks`` without building them, a pickle made on
a GPU loads on a CPU-only machine, and ``save`` / ``export_onnx`` reach the
safe format and the ONNX exporter.
"""

import copy
import warnings

import torch
from sklearn.utils._param_validation import InvalidParameterError
from skorch.exceptions import DeviceWarning

__all__ = ["SklearnPlumbingMixin", "resolve_device"]


def resolve_device(device):
    """Map ``"auto"`` to ``"cuda"`` when CUDA is available, else ``"cpu"``."""
    if isinstance(device, str) and device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class SklearnPlumbingMixin:
    """``device="auto"``, ``get_params`` / ``set_params``, pickling, ``save``, ``export_onnx``."""

    # device="auto": the parameter is stored as given; skorch reads the
    # resolved device through this property.
    @property
    def device(self):
        return resolve_device(self._device_param)

    @device.setter
    def device(self, value):
        self._device_param = value

    def _get_param_names(self):
        # skorch lists every public key of __dict__; drop private state
        # (``_params_to_validate``, ``_device_param``, ...) and add ``device``.
        names = [k for k in super()._get_param_names() if not k.startswith("_")]
        return names + ["device"]

    def get_params(self, deep=True, **kwargs):
        params = super().get_params(deep=deep, **kwargs)
        params["device"] = self._device_param
        return params

    def set_params(self, **kwargs):
        """Set parameters; like skorch's, but only stores ``callbacks`` on an uninitialized net.

        skorch builds the callbacks inside ``set_params``; scikit-learn expects
        ``set_params`` to store values and leave their checks to ``fit``.
        """
        if "callbacks" in kwargs and not self.initialized_:
            self.callbacks = kwargs.pop("callbacks")
        return super().set_params(**kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_fit_state", None)  # lives for one fit only
        _drop_lr_schedulers(state)
        return state

    #: parameters added since 0.1.0, with the value that keeps an older pickle's behaviour
    _added_params = {"scoring": "loss"}

    def __setstate__(self, state):
        for name, value in self._added_params.items():
            state.setdefault(name, value)
        requested = state.pop("_device_param", "cpu")
        state["device"] = resolve_device(requested)
        with warnings.catch_warnings():
            if requested is None:
                # skorch maps device=None to "cpu" with a DeviceWarning; None means
                # that nothing moves the model (Accelerate places it): keep it
                warnings.simplefilter("ignore", DeviceWarning)
            super().__setstate__(state)
        loaded = self.__dict__.pop("device")
        if requested is None:
            self._device_param = None
            return
        # keep "auto" as given; otherwise follow skorch (cuda -> cpu fallback)
        if isinstance(loaded, torch.device) and not isinstance(requested, torch.device):
            loaded = str(loaded)  # skorch's fallback returns torch.device("cpu")
        self._device_param = requested if requested == "auto" else loaded

    def __sklearn_is_fitted__(self):
        return bool(getattr(self, "initialized_", False)) and hasattr(self, "n_features_in_")

    def _validate_device(self):
        device = self._device_param
        if device is None or (isinstance(device, str) and device == "auto"):
            return
        try:
            parsed = torch.device(device)
        except (RuntimeError, TypeError):
            raise InvalidParameterError(
                f"The 'device' parameter of {type(self).__name__} must be 'auto', None, a "
                f"torch.device or a device string such as 'cpu' or 'cuda:0'. Got {device!r} instead."
            ) from None
        if parsed.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False). Use device='cpu' or device='auto'."
            )

    def _torch_device(self):
        """The resolved ``device`` as a ``torch.device`` (the CPU for ``device=None``)."""
        return torch.device(self.device) if self.device is not None else torch.device("cpu")

    def save(self, path):
        """Save the fitted estimator to ``path`` in the safe sk_softreg format.

        The file holds the weights (safetensors) and a JSON config with the
        parameters and fitted attributes; :func:`sk_softreg.load` reads it back
        without unpickling anything. Callbacks, the optimizer state and other
        parameters that JSON cannot hold are not saved (a warning lists them).

        Parameters
        ----------
        path : str or os.PathLike
            The file to write.

        Returns
        -------
        self
        """
        from ._persistence import save

        save(self, path)
        return self

    def export_onnx(self, path):
        """Write the fitted network to ``path`` as an ONNX model, for inference without torch.

        The graph has one input ``"X"`` with a dynamic batch axis (the
        classifier's images ``(batch, C, H, W)``, the regressor's rows
        ``(batch, n_features)``, float32) and computes what ``predict_proba``
        (classifier: ``"probabilities"``, softmax inside the graph, columns
        ordered as ``classes_``; for multilabel targets each label's sigmoid) or ``predict(X, return_std=True)`` (regressor:
        ``"mean"`` and ``"std"`` in y's units) return. Needs the optional extra
        ``pip install "sk-softreg[onnx]"``; see the ONNX page of the docs.

        Parameters
        ----------
        path : str or os.PathLike
            The ``.onnx`` file to write (weights included).

        Returns
        -------
        self
        """
        from ._onnx import export_onnx

        export_onnx(self, path)
        return self


def _drop_lr_schedulers(state):
    """Pickle callbacks without the torch LR scheduler they hold.

    skorch 1.4's ``LRScheduler`` keeps ``lr_scheduler_``, and through it the
    optimizer with its (possibly CUDA) tensors, outside the registered
    attributes, so plain pickle serializes them and a CUDA-trained net no longer
    loads without CUDA (skorch issue #1096). ``on_train_begin`` rebuilds the
    scheduler from history, so the pickled copies drop it; the live callbacks
    are left untouched.
    """
    copies = {}

    def without_scheduler(cb):
        if getattr(cb, "lr_scheduler_", None) is None:
            return cb
        if id(cb) not in copies:
            copies[id(cb)] = copy.copy(cb)
            copies[id(cb)].lr_scheduler_ = None
        return copies[id(cb)]

    def fix(item):
        if isinstance(item, tuple) and len(item) == 2:
            return (item[0], without_scheduler(item[1]))
        return without_scheduler(item)

    for key in ("callbacks", "callbacks_"):
        if isinstance(state.get(key), list):
            state[key] = [fix(item) for item in state[key]]
