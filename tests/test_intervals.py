"""The regressor's predictive std: the KL on the dropout-free output, and ``std_scale_``."""

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.datasets import make_regression
from sklearn.model_selection import train_test_split
from skorch.dataset import Dataset, ValidSplit
from skorch.helper import predefined_split

from sk_softreg import SoftRegRegressor
from sk_softreg._predictive_std import (
    dropout_layers,
    dropout_off,
    shares_dropout_free_pass,
    std_scale,
)
from sk_softreg.modules import GaussianMLP
from sk_softreg.penalties import gaussian_soft_kl

Z90 = norm.ppf(0.95)


def coverage_and_nll(y, mean, std):
    coverage = np.mean(np.abs(y - mean) <= Z90 * std)
    nll = np.mean(0.5 * np.log(2 * np.pi * std**2) + 0.5 * ((y - mean) / std) ** 2)
    return coverage, nll


@pytest.fixture(scope="module")
def easy():
    """The issue's easy problem: constant noise, R² about 0.99, 1,000 training rows
    (dropout 0.5 under the size rule). One split and one seed, as reported there."""
    X, y = make_regression(2000, 6, noise=5, random_state=0)
    return train_test_split(X, y, test_size=0.5, random_state=0)


def test_alpha_std_holds_where_the_network_fits_well(easy):
    X_tr, X_te, y_tr, y_te = easy
    plain = SoftRegRegressor(random_state=0, device="cpu").fit(X_tr, y_tr)
    soft = SoftRegRegressor(alpha=0.1, random_state=0, device="cpu").fit(X_tr, y_tr)
    mean_plain, std_plain = plain.predict(X_te, return_std=True)
    mean, std = soft.predict(X_te, return_std=True)
    _, nll_plain = coverage_and_nll(y_te, mean_plain, std_plain)
    coverage, nll = coverage_and_nll(y_te, mean, std)
    # the user guide's table for this split and seed: R² 0.996 and 0.998, median std 10.25
    # and 6.58, coverage 0.882 and 0.883, NLL 3.819 and 3.470 (before the correction the
    # head gave a median std of 54.5, coverage 1.000, NLL 4.931)
    assert min(plain.score(X_te, y_te), soft.score(X_te, y_te)) >= 0.99
    assert 0.85 <= coverage <= 0.95
    assert np.median(std) < 0.8 * np.median(std_plain)
    assert nll <= nll_plain - 0.2


def small_reg(**kwargs):
    params = dict(alpha=0.1, max_epochs=8, random_state=0, device="cpu", batch_size=32)
    return SoftRegRegressor(**{**params, **kwargs})


@pytest.fixture(scope="module")
def data():
    X, y = make_regression(400, 5, noise=10, random_state=1)
    return X.astype(np.float32), y


def z_squared(reg, X, y):
    mean, std = reg.predict(X, return_std=True)
    return np.mean(((y - mean) / std) ** 2)


def test_without_held_out_rows_the_scale_calibrates_the_training_rows(data):
    X, y = data
    reg = small_reg(early_stopping=False).fit(X, y)
    assert reg.std_scale_.shape == (1,) and reg.std_scale_[0] != 1.0
    np.testing.assert_allclose(z_squared(reg, X, y), 1.0, rtol=1e-4)


def test_partial_fit_calibrates_on_the_rows_of_the_call(data):
    X, y = data
    reg = small_reg().partial_fit(X[:200], y[:200]).partial_fit(X[200:], y[200:])
    np.testing.assert_allclose(z_squared(reg, X[200:], y[200:]), 1.0, rtol=1e-4)


def scale_on(reg, X, y):
    """The NLL-optimal factor on ``reg``'s std for these rows."""
    mean, std = reg.predict(X, return_std=True)
    return np.sqrt(np.mean(((y - mean) / (std / reg.std_scale_[0])) ** 2))


def test_the_scale_is_the_larger_of_the_training_and_validation_rows(data):
    X, y = data
    X_fit, X_valid, y_fit, y_valid = X[:300], X[300:], y[:300], y[300:]
    valid = Dataset(X_valid, y_valid)  # y's units, as for fit
    reg = small_reg(train_split=predefined_split(valid)).fit(X_fit, y_fit)
    on_valid, on_train = scale_on(reg, X_valid, y_valid), scale_on(reg, X_fit, y_fit)
    assert not np.isclose(on_valid, on_train, rtol=1e-2)
    np.testing.assert_allclose(reg.std_scale_[0], max(on_valid, on_train), rtol=1e-4)
    # validation rows that ask for more width than the training rows decide it
    noisy = Dataset(X_valid, 3.0 * (y_valid - y_fit.mean()) + y_fit.mean())
    wide = small_reg(train_split=predefined_split(noisy)).fit(X_fit, y_fit)
    np.testing.assert_allclose(wide.std_scale_[0], scale_on(wide, X_valid, 3.0 * (y_valid - y_fit.mean()) + y_fit.mean()), rtol=1e-4)
    assert wide.std_scale_[0] > 1.5 * scale_on(wide, X_fit, y_fit)


def test_early_stopping_uses_its_held_out_rows(data):
    X, y = data
    reg = small_reg(early_stopping=True, validation_fraction=0.25).fit(X, y)
    _, valid = ValidSplit(0.25, random_state=0)(Dataset(X, y), y)
    idx = np.asarray(valid.indices)
    expected = max(scale_on(reg, X[idx], y[idx]), scale_on(reg, X, y))
    np.testing.assert_allclose(reg.std_scale_[0], expected, rtol=1e-4)


def test_weighted_scale_uses_the_weights(data):
    X, y = data
    w = np.where(np.arange(len(y)) % 2 == 0, 1.0, 3.0)
    reg = small_reg(early_stopping=False).fit(X, y, sample_weight=w)
    mean, std = reg.predict(X, return_std=True)
    np.testing.assert_allclose(np.average(((y - mean) / std) ** 2, weights=w), 1.0, rtol=1e-4)


def test_alpha_zero_keeps_the_residual_std(data):
    X, y = data
    reg = small_reg(alpha=0.0).fit(X, y)
    np.testing.assert_array_equal(reg.std_scale_, [1.0])
    np.testing.assert_allclose(reg.predict(X[:5], return_std=True)[1], reg.residual_std_[0])


def test_std_scale_formula():
    residual = np.array([[1.0, 2.0], [3.0, -2.0]])
    std = np.array([[1.0, 2.0], [1.0, 1.0]])
    np.testing.assert_allclose(std_scale(residual, std), np.sqrt([(1 + 9) / 2, (1 + 4) / 2]))
    np.testing.assert_allclose(std_scale(residual, std, np.array([3.0, 1.0])), np.sqrt([(3 + 9) / 4, (3 + 4) / 4]))


def test_kl_sees_the_output_without_dropout(data):
    X, y = data
    reg = small_reg(max_epochs=1, module__dropout=0.5).fit(X, y)
    module = reg.module_.train()
    X_t = torch.as_tensor(X[:64])
    y_t = torch.as_tensor(((y[:64] - reg.y_mean_) / reg.y_scale_).astype(np.float32))
    with torch.no_grad():
        y_train = module(X_t)
        kl = reg._kl_term(y_train, y_t, X_t)
        y_eval = module.eval()(X_t)
    module.train()
    mu, log_var = reg._split_output(y_eval)
    torch.testing.assert_close(kl, gaussian_soft_kl(y_t.view_as(mu), mu, log_var, reg.tau))
    assert all(m.training for m in module.modules())  # dropout switched back on
    mu_train, log_var_train = reg._split_output(y_train)
    assert not torch.allclose(kl, gaussian_soft_kl(y_t.view_as(mu), mu_train, log_var_train, reg.tau))


class _OnePassOnly(GaussianMLP):
    """GaussianMLP without the ``dropout_free`` keyword: the KL takes a second pass."""

    def forward(self, X):
        return super().forward(X)


def test_gaussian_mlp_gives_the_dropout_free_output_from_the_same_pass():
    module = GaussianMLP(n_features=5, n_outputs=2, hidden_units=(16, 8), dropout=0.5).train()
    X = torch.randn(32, 5)
    torch.manual_seed(0)
    y_train, y_clean = module(X, dropout_free=True)
    torch.manual_seed(0)
    torch.testing.assert_close(y_train, module(X))  # the same dropout draws
    torch.testing.assert_close(y_clean, module.eval()(X))
    assert not torch.allclose(y_train, y_clean)


def test_shared_pass_fits_as_the_second_pass_does(data):
    """The fit with GaussianMLP's one-pass KL output equals the fit that runs a second
    dropout-free pass (a module without ``dropout_free``), step for step."""
    X, y = data
    params = dict(max_epochs=3, module__dropout=0.3, alpha=0.1)
    shared = small_reg(**params).fit(X, y)
    second = small_reg(module=_OnePassOnly, **params).fit(X, y)
    assert shares_dropout_free_pass(shared.module_)
    assert not shares_dropout_free_pass(second.module_)
    np.testing.assert_allclose(shared.predict(X), second.predict(X), atol=1e-4)
    for a, b in zip(shared.history[:, "train_kl"], second.history[:, "train_kl"]):
        assert a == pytest.approx(b, rel=1e-4)


class _Shifted(_OnePassOnly):
    """A module whose ``forward`` takes a fit param (and no ``dropout_free``); it
    records the ``shift`` of each call in training."""

    def forward(self, X, shift=0.0):
        if self.training:
            self.shifts.append(float(shift))
        return super().forward(X + shift)

    shifts = []


def test_second_pass_gets_the_fit_params(data):
    """The KL's second, dropout-free pass calls the module with the step's fit params,
    as the training pass does."""
    X, y = data
    _Shifted.shifts = []
    reg = small_reg(module=_Shifted, max_epochs=2, module__dropout=0.3, alpha=0.1, early_stopping=False)
    reg.fit(X, y, shift=0.5)
    n_steps = len(reg.history[-1, "batches"]) * 2
    assert len(_Shifted.shifts) >= 2 * n_steps  # the training pass and the KL's, each step
    assert set(_Shifted.shifts) == {0.5}


def test_dropout_layers_finds_every_torch_dropout_class():
    """The KL switches off every dropout layer torch has (a new class would be missed)."""
    from torch.nn.modules.dropout import _DropoutNd  # only to list torch's classes

    classes = [c for c in _DropoutNd.__subclasses__() if c.__module__.startswith("torch.")]
    module = torch.nn.Sequential(*(c(0.5) for c in classes), torch.nn.Linear(2, 2))
    assert len(dropout_layers(module)) == len(classes) >= 6


def test_dropout_off_switches_the_layers_off_only_within():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5), torch.nn.Dropout1d(0.5))
    layers = dropout_layers(net)
    layers[1].eval()
    with dropout_off(layers):
        assert not any(m.training for m in layers) and net[0].training
    assert [m.training for m in net] == [True, True, False]  # each back in its own mode


def test_alpha_zero_keeps_a_scale_of_one_with_held_out_rows(data):
    """std_scale_ is 1 when alpha == 0, even where held-out rows would ask for more."""
    X, y = data
    X_fit, X_valid, y_fit, y_valid = X[:300], X[300:], y[:300], y[300:]
    noisy = Dataset(X_valid, 3.0 * (y_valid - y_fit.mean()) + y_fit.mean())
    reg = small_reg(alpha=0.0, train_split=predefined_split(noisy)).fit(X_fit, y_fit)
    np.testing.assert_array_equal(reg.std_scale_, [1.0])
    np.testing.assert_allclose(reg.predict(X_valid, return_std=True)[1], reg.residual_std_[0])


def test_weighted_early_stopping_scale_weights_the_held_out_rows(data):
    """In a weighted fit, the held-out rows' scale is weighted as the training rows' is."""
    X, y = data
    _, valid = ValidSplit(0.25, random_state=0)(Dataset(X, y), y)
    idx = np.asarray(valid.indices)
    loud = idx[::2]  # held-out rows with extra noise and a large weight
    y = y.copy()
    y[loud] += 3 * y.std() * np.random.default_rng(0).standard_normal(len(loud))
    w = np.ones(len(y))
    w[loud] = 5.0
    reg = small_reg(early_stopping=True, validation_fraction=0.25).fit(X, y, sample_weight=w)

    def weighted_scale(rows):
        mean, std = reg.predict(X[rows], return_std=True)
        z = (y[rows] - mean) / (std / reg.std_scale_[0])
        return np.sqrt(np.average(z**2, weights=w[rows])), np.sqrt(np.mean(z**2))

    (on_valid, unweighted_valid), (on_all, _) = weighted_scale(idx), weighted_scale(np.arange(len(y)))
    assert on_valid > on_all and not np.isclose(on_valid, unweighted_valid, rtol=0.05)
    np.testing.assert_allclose(reg.std_scale_[0], on_valid, rtol=1e-4)


def test_alpha_zero_takes_no_dropout_free_pass(data):
    """Without the KL term (alpha == 0) no dropout-free output is needed: one forward
    pass per training step, against two with alpha > 0 for a module without
    ``dropout_free``."""
    X, y = data

    def training_passes(alpha):
        _Shifted.shifts = []
        reg = small_reg(module=_Shifted, max_epochs=2, module__dropout=0.3, alpha=alpha,
                        early_stopping=False).fit(X, y)
        n_steps = sum(len(epoch["batches"]) for epoch in reg.history)
        return len(_Shifted.shifts), n_steps

    passes, n_steps = training_passes(0.0)
    assert passes == n_steps
    passes, n_steps = training_passes(0.1)
    assert passes == 2 * n_steps


class _CountingShared(GaussianMLP):
    """GaussianMLP (with ``dropout_free``) recording each training call's keyword."""

    calls = []

    def forward(self, X, dropout_free=False):
        if self.training:
            self.calls.append(dropout_free)
        return super().forward(X, dropout_free=dropout_free)


def test_shared_pass_is_one_forward_per_step(data):
    """A module whose forward takes ``dropout_free`` gives the KL its output from the
    training pass itself: one call per training step, with ``dropout_free=True``."""
    X, y = data
    _CountingShared.calls = []
    reg = small_reg(module=_CountingShared, max_epochs=2, module__dropout=0.3, alpha=0.1,
                    early_stopping=False).fit(X, y)
    n_steps = sum(len(epoch["batches"]) for epoch in reg.history)
    assert _CountingShared.calls == [True] * n_steps


class _FrozenDropout(_Shifted):
    """Its dropout layers stay in eval mode in training too."""

    def train(self, mode=True):
        super().train(mode)
        for layer in dropout_layers(self):
            layer.eval()
        return self


def test_no_second_pass_when_no_dropout_layer_is_training(data):
    """With every dropout layer already off, the training output is the dropout-free
    one: no second pass for the KL."""
    X, y = data
    _Shifted.shifts = []
    reg = small_reg(module=_FrozenDropout, max_epochs=2, module__dropout=0.3, alpha=0.1,
                    early_stopping=False).fit(X, y)
    n_steps = sum(len(epoch["batches"]) for epoch in reg.history)
    assert dropout_layers(reg.module_) and len(_Shifted.shifts) == n_steps


def test_forward_without_a_signature_does_not_share_the_pass():
    module = torch.nn.Identity()
    module.forward = torch.relu  # a builtin: inspect.signature raises ValueError
    assert not shares_dropout_free_pass(module)
    assert shares_dropout_free_pass(GaussianMLP(n_features=2, n_outputs=1))


def test_std_scale_computes_in_float64():
    # float32 inputs: (3e20)**2 overflows float32, not float64
    residual = np.array([[3e20], [4e20]], dtype=np.float32)
    std = np.ones((2, 1), dtype=np.float32)
    scale = std_scale(residual, std)
    assert scale.dtype == np.float64
    np.testing.assert_allclose(scale, [np.sqrt((9 + 16) / 2) * 1e20], rtol=1e-6)
