"""Feature selection: the group-L1 penalty on the input layer's columns (``lambda_features``).

The input layer is the first ``nn.Linear`` the module calls, if it takes
every input feature (:func:`~sk_softreg.penalties.input_layer`). Its column
``j`` holds every weight of input ``j``; the penalty
``λf·Σ_j ‖W1[:, j]‖₂`` is applied by a group soft-threshold after each step,
so inputs leave the network with exact zeros, and ``feature_importances_``
are the columns' norms.
"""

import numpy as np
import torch

from ._warnings import warn
from .penalties import group_l2_penalty, input_layer, prox_group_l2_, prox_thresholds

__all__ = ["FeatureSelectionMixin"]


class FeatureSelectionMixin:
    """``lambda_features``: the group prox step, its value, and ``feature_importances_``."""

    def _input_linear(self):
        """The network's input layer if it is an ``nn.Linear`` taking every input feature.

        Returns ``(layer, None)``, or ``(None, reason)`` when the first layer
        with parameters (in forward order, see
        :func:`~sk_softreg.penalties.input_layer`) is something else.
        """
        module = self.module_
        if not any(
            isinstance(m, torch.nn.Linear) and m.in_features == self.n_features_in_
            for m in module.modules()
        ):  # no candidate: skip the forward pass
            n = self.n_features_in_
            return None, f"{type(module).__name__} has no nn.Linear taking {n} inputs"
        param = next(module.parameters(), None)
        example = self._example_input(2)
        if param is not None:
            example = example.to(param.device)
        name, layer = input_layer(module, example)
        if isinstance(layer, torch.nn.Linear) and layer.in_features == self.n_features_in_:
            return layer, None
        if layer is None:
            found = "calls no layer with parameters"
        else:
            found = f"starts with {type(layer).__name__} ({name or 'the module itself'!r})"
            if isinstance(layer, torch.nn.Linear):
                found += f" taking {layer.in_features} inputs"
        return None, f"{type(module).__name__} {found}"

    def _feature_weight(self):
        """The input layer's weight, shape (hidden, n_features_in_).

        Raises
        ------
        ValueError
            Where the module's input layer is not such an ``nn.Linear``.
        """
        layer, reason = self._input_linear()
        if layer is None:
            raise ValueError(
                f"lambda_features={self.lambda_features!r} needs a module whose first layer with "
                f"parameters is an nn.Linear taking the {self.n_features_in_} input features "
                f"(possibly after nn.Flatten), but {reason}. Use lambda_features=0 with "
                "convolutional or other input layers."
            )
        return layer.weight

    def _features_value(self, weight):
        """``λf·Σ_j ‖W1[:, j]‖₂`` of the input layer's ``weight``, without gradient."""
        with torch.no_grad():
            return self.lambda_features * group_l2_penalty(weight)

    def _prox_features(self, weight):
        """Group soft-threshold of the input layer's columns (after the L1 prox: the
        composition is the prox of the sparse group lasso)."""
        # per-coordinate step sizes: the L1 thresholds for lambda1 = 1
        steps = prox_thresholds(self.optimizer_, [weight], 1.0)[0]
        prox_group_l2_(weight, steps, self.lambda_features)

    def _set_feature_importances(self):
        for name in ("feature_importances_", "n_features_selected_"):
            self.__dict__.pop(name, None)
        layer, _ = self._input_linear()
        if layer is None:
            return
        norms = torch.linalg.vector_norm(layer.weight.detach(), dim=0).cpu().double().numpy()
        total = norms.sum()
        self.feature_importances_ = norms / total if total > 0 else norms
        self.n_features_selected_ = int(np.count_nonzero(norms))
        if self.n_features_selected_ == 0:
            causes = [f"{name}={getattr(self, name)!r}" for name in ("lambda_features", "lambda1")
                      if getattr(self, name)]
            warn(
                f"The weights of every input are zero: the network ignores its inputs. Use a "
                f"smaller {' or '.join(causes) or 'penalty'}."
            )
