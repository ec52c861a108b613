"""The Accelerate variants select penalized weights on the unwrapped module."""

import numpy as np
import pytest

pytest.importorskip("accelerate")

import torch
from accelerate import Accelerator

from sk_softreg.accelerate import AcceleratedSoftRegRegressor


def _weights_only(name, param):
    # by the module's own names: body.0.weight, mean.weight, log_var.weight
    return name.split(".")[0] in {"body", "mean", "log_var"} and name.endswith("weight")


def test_penalized_params_see_the_names_of_the_unwrapped_module():
    rng = np.random.RandomState(0)
    X = rng.randn(16, 3).astype(np.float32)
    y = X @ np.array([1.0, -1.0, 0.5])
    est = AcceleratedSoftRegRegressor(
        accelerator=Accelerator(cpu=True), penalize=_weights_only, lambda1=1e-3,
        max_epochs=1, batch_size=8, random_state=0,
    ).fit(X, y)
    inner = est.module_
    expected = [p for name, p in inner.named_parameters() if _weights_only(name, p)]
    # a parallel wrapper (DataParallel here; DistributedDataParallel on several processes)
    # puts its own prefix on every name; the selection must not depend on it
    est.module_ = torch.nn.DataParallel(inner)
    names = [name for name, _ in est.module_.named_parameters()]
    assert all(name.startswith("module.") for name in names)
    selected = est._penalized_params()
    assert len(selected) == len(expected) == 3
    assert all(a is b for a, b in zip(selected, expected))
