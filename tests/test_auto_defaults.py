"""SoftRegRegressor's size-dependent defaults: batch_size, lr, dropout and early_stopping "auto"."""

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError

from sk_softreg import SoftRegRegressor
from sk_softreg._size_rules import auto_batch_size, auto_dropout, auto_lr, is_auto
from sk_softreg.modules import GaussianMLP


@pytest.mark.parametrize(
    "n, dropout, batch, lr",
    [
        (100, 0.5, 128, 1.741e-3),
        (1000, 0.5, 128, 1.741e-3),
        (1999, 0.3796, 128, 1.741e-3),
        (2000, 0.3796, 256, 3.031e-3),
        (3162, 0.3, 256, 3.031e-3),
        (10_000, 0.1, 256, 3.031e-3),
        (1_000_000, 0.1, 256, 3.031e-3),
    ],
)
def test_rule_values(n, dropout, batch, lr):
    assert auto_dropout(n) == pytest.approx(dropout, abs=1e-4)
    assert auto_batch_size(n) == batch
    assert auto_lr(auto_batch_size(n)) == pytest.approx(lr, rel=1e-3)


def test_lr_follows_the_batch_size_up_to_256():
    assert auto_lr(64) == pytest.approx(1e-3)
    assert auto_lr(32) < auto_lr(64) < auto_lr(128) < auto_lr(256) == auto_lr(4096)


@pytest.mark.parametrize(
    "value",
    ["Auto", "auto ", 1e-3, None, np.array("auto"), np.array(["auto"]), torch.tensor(1e-3)],
    ids=["Auto", "trailing_space", "float", "None", "0d_array", "1d_array", "tensor"],
)
def test_is_auto_only_for_the_string(value):
    # an array or tensor holding "auto" (or a value) is not the "auto" default
    assert is_auto("auto") is True
    assert is_auto(value) is False


def rows(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, X @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=n)


def dropouts(est):
    return [m.p for m in est.module_.modules() if isinstance(m, torch.nn.Dropout)]


def epoch_batches(est):
    batches = est.history[-1, "batches"]
    return [b["train_batch_size"] for b in batches if "train_batch_size" in b], sum(
        "valid_loss" in b for b in batches
    )


def test_defaults_resolve_from_the_rows_given_to_fit():
    X, y = rows(2500)
    est = SoftRegRegressor(max_epochs=1, random_state=0, device="cpu").fit(X, y)
    # early stopping holds out 10%: 2250 training rows in batches of 256
    train_sizes, n_valid_batches = epoch_batches(est)
    assert train_sizes == [256] * 8 + [2250 - 8 * 256]
    assert n_valid_batches == 1  # 250 validation rows, one batch
    assert "valid_loss" in est.history[-1]
    assert dropouts(est) == [pytest.approx(auto_dropout(2500))]
    assert est.optimizer_.param_groups[0]["lr"] == pytest.approx(auto_lr(256))
    params = est.get_params()
    assert (params["batch_size"], params["lr"], params["early_stopping"]) == ("auto",) * 3
    assert "module__dropout" not in params


def test_small_data_trains_on_every_row_without_early_stopping():
    X, y = rows(200)  # a validation share of 20 rows is too small to stop on
    est = SoftRegRegressor(max_epochs=2, random_state=0, device="cpu").fit(X, y)
    train_sizes, n_valid_batches = epoch_batches(est)
    assert train_sizes == [128, 72]
    assert n_valid_batches == 0
    assert est.n_iter_ == est.best_epoch_ == 2
    assert dropouts(est) == [0.5]
    assert est.optimizer_.param_groups[0]["lr"] == pytest.approx(auto_lr(128))


@pytest.mark.parametrize(
    "params, batch, lr",
    [
        ({"batch_size": 100}, 100, auto_lr(100)),  # lr follows an explicit batch size
        ({"iterator_train__batch_size": 50}, 50, auto_lr(50)),
        ({"lr": 0.01}, 256, 0.01),
        ({"optimizer__lr": 0.02}, 256, 0.02),
        ({"batch_size": 64, "lr": 1e-3}, 64, 1e-3),
    ],
)
def test_explicit_batch_size_and_lr_win(params, batch, lr):
    X, y = rows(2500)
    est = SoftRegRegressor(max_epochs=1, early_stopping=False, random_state=0, device="cpu")
    est.set_params(**params).fit(X, y)
    train_sizes, _ = epoch_batches(est)
    assert train_sizes[0] == batch
    assert est.optimizer_.param_groups[0]["lr"] == pytest.approx(lr)
    assert all(est.get_params()[k] == v for k, v in params.items())


def test_explicit_dropout_and_early_stopping_win():
    X, y = rows(2500)
    est = SoftRegRegressor(
        max_epochs=1, module__dropout=0.2, early_stopping=False, random_state=0, device="cpu"
    ).fit(X, y)
    assert dropouts(est) == [0.2]
    assert "valid_loss" not in est.history[-1]
    assert epoch_batches(est)[0][-1] == 2500 - 9 * 256  # every row trained on


class OtherMLP(GaussianMLP):
    """A user module class taking ``dropout`` (a subclass: not the default module)."""


@pytest.mark.parametrize("module, expected", [(GaussianMLP, 0.1), (OtherMLP, 0.5)])
def test_size_dependent_dropout_only_for_the_default_module(module, expected):
    X, y = rows(10_000)
    est = SoftRegRegressor(module, max_epochs=1, batch_size=2000, early_stopping=False,
                           random_state=0, device="cpu").fit(X, y)
    assert dropouts(est) == [pytest.approx(expected)]  # OtherMLP keeps its own default


def test_partial_fit_does_not_stop_early_with_auto():
    X, y = rows(2500)
    est = SoftRegRegressor(max_epochs=1, random_state=0, device="cpu")
    est.partial_fit(X, y)
    assert "valid_loss" not in est.history[-1]
    est.fit(X, y)  # a fit holds out its validation rows
    assert "valid_loss" in est.history[-1]
    est.partial_fit(X, y)  # and a later partial_fit trains on all of them again
    assert "valid_loss" not in est.history[-1]
    assert est.best_epoch_ == est.n_iter_ == 2


@pytest.mark.parametrize(
    "param, value", [("batch_size", "big"), ("batch_size", 0), ("lr", -1.0), ("lr", "fast"),
                     ("early_stopping", "always")]
)
def test_bad_auto_parameters(param, value):
    X, y = rows(20)
    with pytest.raises(InvalidParameterError, match=param):
        SoftRegRegressor(max_epochs=1, device="cpu").set_params(**{param: value}).fit(X, y)


def test_saved_model_keeps_its_resolved_defaults(tmp_path):
    from sk_softreg import load

    X, y = rows(2500)
    est = SoftRegRegressor(max_epochs=1, random_state=0, device="cpu").fit(X, y)
    loaded = load(est.save(tmp_path / "reg.safetensors") and tmp_path / "reg.safetensors")
    assert loaded.get_params_for("iterator_train")["batch_size"] == 256
    assert loaded.optimizer_.param_groups[0]["lr"] == pytest.approx(auto_lr(256))
    assert dropouts(loaded) == dropouts(est)


@pytest.mark.parametrize("n, active", [(120, True), (119, False)])
def test_auto_early_stopping_starts_at_30_validation_rows(n, active):
    """early_stopping="auto" holds out rows when n * validation_fraction >= 30."""
    X, y = rows(n)
    est = SoftRegRegressor(max_epochs=1, validation_fraction=0.25, random_state=0, device="cpu").fit(X, y)
    assert ("valid_loss" in est.history[-1]) is active
    assert sum(epoch_batches(est)[0]) == (n - 30 if active else n)
