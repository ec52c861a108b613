"""ONNX export of fitted estimators: ``est.export_onnx(path)``.

The network is wrapped in a small ``nn.Module`` that adds what the estimator
does around it at prediction time (the softmax of ``predict_proba``; the
mean/std mapping of ``predict(X, return_std=True)``), and that module is
exported with torch's ``torch.export``-based ONNX exporter (``dynamo=True``).
The legacy TorchScript exporter is not used: torch deprecates it, and it fails
on the torchvision networks whose input is upsampled by a size computed in
Python. The exporter needs ``onnx`` and ``onnxscript``, the optional extra
``[onnx]`` (which also installs ``onnxruntime`` to run the file).
"""

import copy
import importlib
import json
import os

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

__all__ = ["export_onnx"]

INSTALL_HINT = 'pip install "sk-softreg[onnx]"'
_EXPORTER_PACKAGES = ("onnx", "onnxscript")
INPUT_NAME = "X"


def _require_exporter():
    missing = []
    for name in _EXPORTER_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f"export_onnx needs the optional ONNX packages, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed. Install them with: "
            f"{INSTALL_HINT}"
        )


def cpu_copy(module):
    """A copy of ``module`` on the CPU in eval mode (the fitted one is left as it is)."""
    return copy.deepcopy(module).to("cpu").eval()


class ProbabilityGraph(nn.Module):
    """The classifier's network followed by ``predict_proba``'s nonlinearity (softmax)."""

    def __init__(self, module, nonlinearity):
        super().__init__()
        self.module = module
        self.nonlinearity = nonlinearity

    def forward(self, X):
        return self.nonlinearity(self.module(X))


class GaussianGraph(nn.Module):
    """The regressor's network, mapped to y's units: ``(mean, std)`` as ``predict`` returns.

    The standardization of y (``normalize_y``) is undone in float64, like
    ``predict`` does; the std comes from the estimator's ``_predictive_std``.
    """

    def __init__(self, estimator):
        super().__init__()
        self.module = cpu_copy(estimator.module_)
        log_var = getattr(estimator, "log_var_", None)
        self.log_var = cpu_copy(log_var) if log_var is not None else None
        self.squeeze = estimator._y_1d
        self.register_buffer("y_mean", torch.as_tensor(estimator.y_mean_, dtype=torch.float64))
        self.register_buffer("y_scale", torch.as_tensor(estimator.y_scale_, dtype=torch.float64))
        self.split = estimator._split_output
        self.predictive_std = estimator._predictive_std

    def forward(self, X):
        mu, log_var = self.split(self.module(X), self.log_var)
        mean = mu.double() * self.y_scale + self.y_mean
        std = self.predictive_std(log_var.double()) * self.y_scale
        if self.squeeze:
            return mean[:, 0], std[:, 0]
        return mean, std


def export_onnx(estimator, path):
    """Export a fitted estimator's prediction to ONNX (see ``SoftRegMixin.export_onnx``)."""
    check_is_fitted(estimator)
    _require_exporter()
    from . import __version__

    graph, output_names, metadata = estimator._onnx_graph()
    graph = graph.eval()
    example = estimator._example_input(2)
    program = torch.onnx.export(
        graph,
        (example,),
        input_names=[INPUT_NAME],
        output_names=output_names,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        verbose=False,
    )
    props = {
        "sk_softreg_version": __version__,
        "estimator": type(estimator).__name__,
        **{key: json.dumps(_plain(value)) for key, value in metadata.items()},
    }
    program.model.metadata_props.update(props)
    program.save(os.fspath(path), external_data=False)


def _plain(value):
    """JSON-ready python values (arrays and numpy scalars become lists and numbers)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
