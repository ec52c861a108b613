"""The skorch behaviours the estimators rely on: this file fails first on an upgrade.

pyproject pins ``skorch>=1.4,<1.5``. Each test names the assumption it
checks and where the package relies on it, so that a new skorch release
that changes one fails here with that name instead of somewhere deep in a fit.
"""

import inspect

import numpy as np
import pytest
import skorch
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.dataset import Dataset, ValidSplit
from skorch.history import History

from sk_softreg import SoftRegRegressor


def _fail(assumption, where):
    return f"skorch {skorch.__version__} changed: {assumption} (relied on by {where})"


def test_the_skorch_release_is_in_the_pinned_range():
    major, minor = (int(x) for x in skorch.__version__.split(".")[:2])
    assert (major, minor) == (1, 4), _fail(
        "the release is outside skorch>=1.4,<1.5; run this file, then widen the pin",
        "pyproject.toml",
    )


def test_get_iterator_takes_a_dataset_and_training():
    params = list(inspect.signature(NeuralNet.get_iterator).parameters)
    assert params[:3] == ["self", "dataset", "training"], _fail(
        f"NeuralNet.get_iterator's signature is {params}", "FastLoopMixin.get_iterator"
    )


def test_datasets_and_splits_keep_their_arrays():
    X, y = np.zeros((10, 2), np.float32), np.arange(10)
    ds = Dataset(X, y)
    assert ds.X is X and ds.y is y, _fail(
        "skorch.dataset.Dataset no longer keeps X and y as given",
        "_batching.fast_batches_source",
    )
    train, valid = ValidSplit(0.2)(ds, y)
    assert isinstance(train, torch.utils.data.Subset) and train.dataset is ds, _fail(
        "ValidSplit no longer returns torch Subsets of the dataset",
        "_batching.fast_batches_source",
    )


class _Order(Callback):
    """Records the order of a training batch's events, and what history holds meanwhile."""

    def initialize(self):
        self.events = []
        return self

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:
            self.events.append("begin")

    def on_grad_computed(self, net, **kwargs):
        self.events.append("grad")

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            row = list.__getitem__(net.history, -1)["batches"][-1]
            self.events.append(("end", "train_loss" in row, "train_batch_size" in row))


class _Recorder(SoftRegRegressor):
    def train_step_single(self, batch, **fit_params):
        dict(self.callbacks_)["order"].events.append("step_single")
        return super().train_step_single(batch, **fit_params)

    def _proximal_step(self):
        dict(self.callbacks_)["order"].events.append("prox")
        super()._proximal_step()


def test_a_training_batch_runs_step_then_gradient_hooks_then_prox_then_history():
    X, y = np.random.RandomState(0).randn(20, 3).astype(np.float32), np.arange(20.0)
    est = _Recorder(lambda1=1e-3, max_epochs=1, batch_size=20, early_stopping=False,
                    random_state=0, callbacks=[("order", _Order())]).fit(X, y)
    events = dict(est.callbacks_)["order"].events
    assert events == ["begin", "step_single", "grad", "prox", ("end", True, True)], _fail(
        f"one training batch runs {events}: run_single_epoch should call on_batch_begin, "
        "train_step (train_step_single inside optimizer.step's closure, then "
        "on_grad_computed), record train_loss and train_batch_size in the batch row, "
        "then on_batch_end",
        "SoftRegMixin.train_step (prox after the step) and NonFiniteGuard.on_batch_end",
    )


def test_history_rows_index_as_lists_of_dicts():
    history = History()
    history.new_epoch()
    history.new_batch()
    history.record_batch("train_loss", 0.5)
    history.record("epoch", 1)
    row = list.__getitem__(history, -1)
    assert isinstance(row, dict) and row["batches"] == [{"train_loss": 0.5}], _fail(
        "History is no longer a list of epoch dicts with a 'batches' list",
        "NonFiniteGuard.on_batch_end",
    )
    assert history[-1, "batches", -1, "train_loss"] == 0.5, _fail(
        "History's tuple indexing", "the estimators' history terms and their tests"
    )


def test_extra_init_keywords_are_private_or_prefixed():
    net = NeuralNet(torch.nn.Linear, criterion=torch.nn.MSELoss)
    public = [k for k in net.__dict__ if not k.startswith("_") and k.endswith("_")]
    assert "_params_to_validate" in net.__dict__, _fail(
        "NeuralNet no longer keeps _params_to_validate", "SklearnPlumbingMixin._get_param_names"
    )
    assert set(public) <= {"history_", "initialized_", "virtual_params_"}, _fail(
        f"NeuralNet.__init__ sets the attributes {public}", "tests/test_common.py's expected failures"
    )


def test_default_callbacks_are_named_pairs_with_print_log():
    names = [name for name, _ in NeuralNet(torch.nn.Linear, criterion=torch.nn.MSELoss).get_default_callbacks()]
    assert "print_log" in names, _fail(
        f"the default callbacks are {names}", "SoftRegMixin.get_default_callbacks (verbose=1)"
    )


@pytest.mark.parametrize("hook", ["on_batch_begin", "on_batch_end", "on_grad_computed"])
def test_callbacks_receive_the_net_first(hook):
    params = list(inspect.signature(getattr(Callback, hook)).parameters)
    assert params[:2] == ["self", "net"], _fail(
        f"Callback.{hook} takes {params}", "NonFiniteGuard and EpochProgressBar"
    )


def _is_empty(function):
    """True where the function's body is only a docstring and ``pass``."""
    import ast
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0].body
    return all(
        isinstance(node, ast.Pass)
        or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        for node in body
    )


@pytest.mark.parametrize("owner, hook", [
    (Callback, "on_batch_begin"), (Callback, "on_batch_end"), (Callback, "on_grad_computed"),
    (NeuralNet, "on_batch_end"), (NeuralNet, "on_grad_computed"),
])
def test_the_batch_hooks_the_fast_layer_skips_are_empty(owner, hook):
    assert _is_empty(getattr(owner, hook)), _fail(
        f"{owner.__name__}.{hook} is no longer empty", "_fast_loop.hook_calls, which skips it"
    )
