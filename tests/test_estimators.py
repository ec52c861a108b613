"""Behaviour of the two estimators: shapes, labels, penalties in training, defaults."""

import numpy as np
import pandas as pd
import pytest
import torch
from _objective import assert_row_matches, hand_terms
from sklearn.base import clone
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from torch import nn

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor
from sk_softreg._batching import pack_weights
from sk_softreg.modules import SoftRegCNN
from sk_softreg.penalties import kl_from_uniform, kl_to_uniform, weighted_mean

FAST = dict(max_epochs=2, random_state=0, device="cpu")


def clf(**kwargs):
    return SoftRegCNNClassifier(**{**FAST, **kwargs})


def reg(**kwargs):
    return SoftRegRegressor(**{**FAST, **kwargs})


# ----------------------------------------------------------------------------
# classifier input shapes and dtypes
@pytest.mark.parametrize(
    "transform, expected_shape",
    [
        (lambda X: X, (1, 8, 8)),  # flat, perfect square
        (lambda X: X.reshape(-1, 8, 8), (1, 8, 8)),  # (n, H, W)
        (lambda X: X.reshape(-1, 1, 8, 8), (1, 8, 8)),  # (n, C, H, W)
        (lambda X: np.repeat(X.reshape(-1, 1, 8, 8), 3, axis=1), (3, 8, 8)),
        (lambda X: X[:, :10], (1, 1, 10)),  # flat, not a square: a 1 x F strip
        (lambda X: (X * 16).astype(np.uint8), (1, 8, 8)),
        (lambda X: X.astype(np.float32), (1, 8, 8)),
        (lambda X: X.astype(np.int64), (1, 8, 8)),
        (lambda X: X.tolist(), (1, 8, 8)),
        (lambda X: pd.DataFrame(X, columns=[f"px{i}" for i in range(64)]), (1, 8, 8)),
    ],
    ids=["flat", "nhw", "nchw", "rgb", "strip", "uint8", "float32", "int64", "list", "frame"],
)
def test_classifier_accepts_shapes_and_dtypes(small_digits, transform, expected_shape):
    X, y = small_digits
    Xt = transform(X)
    est = clf().fit(Xt, y)
    assert est.input_shape_ == expected_shape
    assert est.n_features_in_ == int(np.prod(expected_shape))
    proba = est.predict_proba(Xt)
    assert proba.shape == (len(y), 10)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert est.predict(Xt).shape == (len(y),)


def test_dataframe_sets_feature_names(small_digits):
    X, y = small_digits
    frame = pd.DataFrame(X, columns=[f"px{i}" for i in range(64)])
    est = clf().fit(frame, y)
    assert list(est.feature_names_in_) == list(frame.columns)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 4, 16)])
def test_flat_and_image_input_are_interchangeable_at_predict(small_digits, shape):
    """Flat rows are reshaped to the fitted images' shape, square or not."""
    X, y = small_digits
    est = clf().fit(X.reshape(-1, *shape), y)
    np.testing.assert_array_equal(est.predict_proba(X), est.predict_proba(X.reshape(-1, *shape)))
    np.testing.assert_array_equal(est.predict_proba(X), est.predict_proba(X.reshape(-1, *shape[1:])))


def test_empty_classes_infers_them_as_none_does(small_digits):
    # skorch's classes=[] means "no classes_"; this classifier needs them, and infers them
    X, y = small_digits
    labels = np.array(["a", "b", "c"])[y % 3]
    inferred = clf().fit(X, labels)
    empty = clf(classes=[]).fit(X, labels)
    np.testing.assert_array_equal(empty.classes_, ["a", "b", "c"])
    np.testing.assert_array_equal(empty.predict_proba(X), inferred.predict_proba(X))
    assert not hasattr(clf(classes=[]), "classes_")  # unfitted


def test_predict_on_images_leaves_the_fitted_feature_names(small_digits):
    """Predicting validates X without resetting what fit learned (sklearn's contract)."""
    X, y = small_digits
    frame = pd.DataFrame(X, columns=[f"px{i}" for i in range(64)])
    est = clf().fit(frame, y)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        est.predict_proba(X.reshape(-1, 1, 8, 8))
    assert list(est.feature_names_in_) == list(frame.columns) and est.n_features_in_ == 64


def test_image_shape_parameter(small_digits):
    X, y = small_digits
    est = clf(image_shape=(4, 16)).fit(X, y)
    assert est.input_shape_ == (1, 4, 16)
    est = clf(image_shape=(1, 2, 32)).fit(X, y)
    assert est.input_shape_ == (1, 2, 32)
    with pytest.raises(ValueError, match="image_shape"):
        clf(image_shape=(5, 5)).fit(X, y)


@pytest.mark.parametrize(
    "labels",
    [np.array([3, 7, 11]), np.array(["cat", "dog", "emu"]), np.array([-1.0, 0.0, 2.0])],
    ids=["ints", "strings", "floats"],
)
def test_classifier_returns_original_labels(small_digits, labels):
    X, y = small_digits
    mask = y < 3
    y_lab = labels[y[mask]]
    est = clf(max_epochs=5).fit(X[mask], y_lab)
    np.testing.assert_array_equal(est.classes_, np.sort(labels))
    pred = est.predict(X[mask])
    assert set(pred) <= set(labels)
    assert np.mean(pred == y_lab) > 0.8


def test_tiny_images_and_strips_work():
    rng = np.random.default_rng(0)
    for shape in [(2, 1, 1), (1, 1, 3), (1, 3, 1), (3, 2, 5)]:
        X = rng.normal(size=(40, *shape)).astype(np.float32)
        y = (X.reshape(40, -1).sum(axis=1) > 0).astype(int)
        est = clf(max_epochs=1).fit(X, y)
        assert est.predict(X).shape == (40,)


# ----------------------------------------------------------------------------
# penalties during training
def test_history_records_penalty_terms(small_digits):
    X, y = small_digits
    est = clf(lambda1=1e-3, lambda2=1e-3, alpha=0.5, max_epochs=3).fit(X, y)
    for row in est.history:
        for key in ("train_loss", "train_l1", "train_l2", "train_kl"):
            assert np.isfinite(row[key])
        assert row["train_l1"] > 0 and row["train_l2"] > 0 and row["train_kl"] > 0


def test_train_loss_is_data_plus_weighted_terms(small_digits):
    # With a vanishing learning rate the weights stay put during the epoch, so each
    # recorded term must equal its hand computation on the final weights.
    X, y = small_digits
    lam1, lam2, alpha = 1e-3, 2e-3, 0.5
    est = clf(lambda1=lam1, lambda2=lam2, alpha=alpha, lr=1e-9, max_epochs=1,
              module__dropout=0.0).fit(X, y)
    est.module_.eval()
    images = X.reshape(-1, 1, 8, 8).astype(np.float32)
    assert_row_matches(est.history[-1], hand_terms(est.module_, images, y, lam1, lam2, alpha), 1e-4)


def test_history_terms_are_zero_without_regularization(small_digits):
    X, y = small_digits
    est = clf().fit(X, y)
    assert est.history[:, "train_l1"] == [0.0, 0.0]
    assert est.history[:, "train_kl"] == [0.0, 0.0]


def test_valid_loss_is_the_plain_data_loss(small_digits, digits):
    X, y = small_digits
    Xv, yv = digits[0][300:500], digits[1][300:500]
    split = predefined_split(Dataset(Xv.reshape(-1, 1, 8, 8).astype(np.float32), yv))
    est = clf(lambda1=1e-2, lambda2=1e-2, alpha=1.0, train_split=split, max_epochs=2).fit(X, y)
    expected = log_loss(yv, est.predict_proba(Xv), labels=est.classes_)
    assert est.history[-1, "valid_loss"] == pytest.approx(expected, rel=1e-4)
    # the training objective carries the penalties, which are large here
    row = est.history[-1]
    assert row["train_l1"] + row["train_l2"] + row["train_kl"] > 0.1
    assert row["train_loss"] > row["valid_loss"]


def test_get_loss_adds_penalties_only_in_training(small_digits):
    X, y = small_digits
    est = clf(lambda1=1e-2, lambda2=1e-2, alpha=1.0, l1_method="subgradient").fit(X, y)
    logits = est.forward(X[:50].reshape(-1, 1, 8, 8).astype(np.float32))
    target = torch.as_tensor(y[:50])
    plain = est.get_loss(logits, target, training=False)
    torch.testing.assert_close(plain, nn.functional.cross_entropy(logits, target))
    trained = est.get_loss(logits, target, training=True)
    weights = est._penalized_params()
    with torch.no_grad():
        l1 = 1e-2 * sum(w.abs().sum() for w in weights)
        l2 = 1e-2 * sum(w.square().sum() for w in weights)
        lp = torch.log_softmax(logits, dim=1)
        kl = (-lp.mean(dim=1) - np.log(10)).mean()
    torch.testing.assert_close(trained, plain + l1 + l2 + kl, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"criterion__label_smoothing": 0.1},
        {"criterion__weight": torch.linspace(0.5, 2.0, 10)},
        {"kl": "confidence_penalty"},
    ],
)
def test_training_loss_is_the_criterion_plus_alpha_kl(small_digits, params):
    X, y = small_digits
    est = clf(alpha=0.7, max_epochs=1, **params).fit(X, y)
    logits = est.forward(X[:40].reshape(-1, 1, 8, 8).astype(np.float32))
    target = torch.as_tensor(y[:40])
    kl = {"label_smoothing": kl_from_uniform, "confidence_penalty": kl_to_uniform}[est.kl]
    expected = est.criterion_(logits, target) + 0.7 * kl(logits).mean()
    torch.testing.assert_close(est.get_loss(logits, target, training=True), expected)
    weights = torch.rand(40)
    weighted = est.get_loss(logits, target, X=pack_weights(X[:40], weights), training=True)
    est.criterion_.reduction = "none"
    per_sample = est.criterion_(logits, target)
    expected = weighted_mean(per_sample, weights) + 0.7 * weighted_mean(kl(logits), weights)
    torch.testing.assert_close(weighted, expected)


def test_proximal_l1_gives_exact_zeros_and_spares_biases(small_digits):
    X, y = small_digits
    est = clf(lambda1=1e-2, max_epochs=3).fit(X, y)
    assert est.sparsity_ > 0.5
    weights = est._penalized_params()
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert est.sparsity_ == pytest.approx(zeros / sum(w.numel() for w in weights))
    biases = [p for name, p in est.module_.named_parameters() if name.endswith("bias")]
    assert all(int((b == 0).sum()) == 0 for b in biases)


def test_subgradient_l1_gives_no_exact_zeros(small_digits):
    X, y = small_digits
    est = clf(lambda1=1e-2, l1_method="subgradient", max_epochs=3).fit(X, y)
    assert est.sparsity_ < 0.01


def test_penalize_all_reaches_biases(small_digits):
    X, y = small_digits
    est = clf(lambda1=1.0, penalize="all", max_epochs=2).fit(X, y)
    biases = [p for name, p in est.module_.named_parameters() if name.endswith("bias")]
    assert sum(int((b == 0).sum()) for b in biases) > 0


class TinyNet(nn.Module):
    """A user module: logits out, no shape arguments."""

    def __init__(self, n_hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, n_hidden), nn.ReLU(), nn.Linear(n_hidden, 10))

    def forward(self, X):
        return self.net(X)


@pytest.mark.parametrize(
    "penalty",
    [
        dict(lambda1=1e-3),
        dict(lambda1=1e-3, l1_method="subgradient"),
        dict(lambda2=1e-3),
        dict(alpha=0.2),
        dict(alpha=0.2, kl="confidence_penalty"),
    ],
)
def test_user_module_works_with_every_penalty(small_digits, penalty):
    X, y = small_digits
    est = clf(module=TinyNet, module__n_hidden=8, max_epochs=10, lr=1e-2, **penalty).fit(X, y)
    assert est.module_.net[1].out_features == 8
    assert np.mean(est.predict(X) == y) > 0.5
    assert est.history[-1, "train_loss"] > 0


def test_module_params_reach_default_cnn(small_digits):
    X, y = small_digits
    est = clf(module__channels=(8,), module__hidden_units=0, module__dropout=0.0).fit(X, y)
    convs = [m for m in est.module_.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8]
    assert isinstance(est.module_, SoftRegCNN)


def test_module_instance_is_used_as_given(small_digits):
    X, y = small_digits
    net = TinyNet(4)
    est = clf(module=net).fit(X, y)
    assert est.module_ is net


# ----------------------------------------------------------------------------
# determinism, params
def test_random_state_makes_fit_deterministic(small_digits):
    X, y = small_digits
    est = clf(alpha=0.1, lambda1=1e-4, max_epochs=2, module__dropout=0.5)
    p1 = est.fit(X, y).predict_proba(X)
    p2 = est.fit(X, y).predict_proba(X)
    p3 = clone(est).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(p1, p3)
    p4 = clf(random_state=1, alpha=0.1, lambda1=1e-4).fit(X, y).predict_proba(X)
    assert not np.array_equal(p1, p4)


def test_fit_leaves_global_torch_rng_alone(small_digits):
    X, y = small_digits
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    clf().fit(X, y)
    torch.testing.assert_close(torch.rand(3), expected)


def test_get_params_set_params_clone_round_trip():
    est = SoftRegCNNClassifier(
        lambda1=1e-4, lambda2=2e-4, alpha=0.3, kl="confidence_penalty", penalize="all",
        l1_method="subgradient", image_shape=(8, 8), random_state=3, device="cpu",
        module__channels=(8,), optimizer__weight_decay=0.0, lr=0.01,
    )
    params = est.get_params(deep=False)
    assert params["device"] == "cpu" and params["module__channels"] == (8,)
    assert not any(k.startswith("_") for k in params)
    twin = clone(est)
    assert twin.get_params(deep=False).keys() == params.keys()
    for key, value in params.items():
        assert twin.get_params(deep=False)[key] == value
    twin.set_params(lambda1=0.5, alpha=0.0, device="auto")
    assert twin.lambda1 == 0.5 and twin.alpha == 0.0 and twin.get_params()["device"] == "auto"
    assert SoftRegRegressor(tau=0.3).get_params()["tau"] == 0.3


def test_device_auto_resolves_without_changing_the_parameter():
    est = SoftRegCNNClassifier()
    assert est.get_params()["device"] == "auto"
    assert est.device == ("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------
# regressor
@pytest.mark.parametrize("alpha, lambda1", [(0.0, 0.0), (0.0, 0.05), (0.1, 0.0), (0.1, 0.05)])
def test_regressor_sparsity_counts_the_weights_the_fit_trains(regression_data, alpha, lambda1):
    # at alpha=0 the log-variance head is neither trained nor used: its zero
    # initialization is not sparsity; at alpha > 0 it is trained and counted
    X, y = regression_data
    est = reg(alpha=alpha, lambda1=lambda1, max_epochs=5).fit(X, y)
    counted = [p for name, p in est.module_.named_parameters()
               if p.ndim > 1 and (alpha or not name.startswith("log_var."))]
    zeros = sum(int((p == 0).sum()) for p in counted)
    assert est.sparsity_ == pytest.approx(zeros / sum(p.numel() for p in counted))
    if not lambda1:
        assert est.sparsity_ == 0.0


def test_regressor_1d_and_2d_targets(regression_data):
    X, y = regression_data
    est = reg(max_epochs=3).fit(X, y)
    assert est.predict(X).shape == (200,)
    Y = np.column_stack([y, -y, 2 * y])
    est = reg(max_epochs=3).fit(X, Y)
    assert est.n_outputs_ == 3
    mean, std = est.predict(X, return_std=True)
    assert mean.shape == std.shape == (200, 3)
    est = reg(max_epochs=3).fit(X, y.reshape(-1, 1))
    assert est.predict(X).shape == (200, 1)


def test_regressor_accepts_int_and_float64_targets(regression_data):
    X, y = regression_data
    for target in (np.round(y).astype(int), y.astype(np.float64)):
        assert reg().fit(X, target).predict(X).dtype == np.float64


def test_regressor_predicts_in_target_units(regression_data):
    X, y = regression_data
    est = reg(max_epochs=60, module__dropout=0.0, lr=5e-3).fit(X, y * 1000)
    assert est.score(X, y * 1000) > 0.9
    assert abs(est.predict(X).mean() - (y * 1000).mean()) < 0.1 * (y * 1000).std()


def test_return_std_uses_variance_head_when_alpha_positive(regression_data):
    X, y = regression_data
    est = reg(alpha=1.0, max_epochs=5).fit(X, y)
    mean, std = est.predict(X, return_std=True)
    assert (std > 0).all() and np.isfinite(std).all()
    assert np.unique(std).size > 1  # heteroscedastic head, not a constant
    est0 = reg(alpha=0.0, max_epochs=5).fit(X, y)
    _, std0 = est0.predict(X, return_std=True)
    np.testing.assert_allclose(std0, est0.residual_std_[0])
    resid = y - est0.predict(X)
    assert est0.residual_std_[0] == pytest.approx(np.sqrt(np.mean(resid**2)), rel=1e-4)


def test_regressor_variance_tracks_noise():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(1000, 1))
    y = x[:, 0] + rng.normal(size=1000) * (0.05 + 0.5 * np.abs(x[:, 0]))
    est = SoftRegRegressor(
        alpha=1.0, tau=0.05, max_epochs=40, module__dropout=0.0, batch_size=64, lr=1e-3,
        early_stopping=False, random_state=0, device="cpu"
    ).fit(x, y)
    _, std = est.predict(np.array([[0.0], [1.8]]), return_std=True)
    assert std[1] > 2 * std[0]


def test_return_std_is_the_std_of_y_not_of_the_soft_target():
    # homoscedastic noise of known std (0.63 in standardized units) and tau = 0.5:
    # the head's sigma = sqrt(noise**2 + tau**2) is ~1.3x the noise std
    rng = np.random.default_rng(0)
    w, noise = np.array([0.5, -0.25, 0.25]), 0.5
    X, X_te = rng.normal(size=(800, 3)), rng.normal(size=(1000, 3))
    y, y_te = X @ w + noise * rng.normal(size=800), X_te @ w + noise * rng.normal(size=1000)
    est = SoftRegRegressor(
        alpha=1.0, tau=0.5, max_epochs=30, module__dropout=0.0, random_state=0, device="cpu"
    ).fit(X, y)
    mean, std = est.predict(X_te, return_std=True)
    assert np.median(std) == pytest.approx(noise, rel=0.08)
    _, log_var = est._predict_standardized(X_te.astype(np.float32))
    head_sigma = np.exp(0.5 * log_var[:, 0]) * est.y_scale_[0]
    assert np.median(head_sigma) > 1.2 * noise  # what return_std reported before
    assert np.mean(np.abs(y_te - mean) <= 1.645 * std) == pytest.approx(0.9, abs=0.03)


def test_return_std_is_floored_at_tau():
    # noise-free data: the residual variance is ~0, sigma**2 - tau**2 would be ~0
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = X @ np.array([1.0, -1.0])
    est = SoftRegRegressor(
        alpha=1.0, tau=0.2, max_epochs=20, module__dropout=0.0, random_state=0, device="cpu"
    ).fit(X, y)
    _, std = est.predict(X, return_std=True)
    # the floor applies to the head's std, before the scalar std_scale_
    assert std.min() >= 0.2 * est.y_scale_[0] * est.std_scale_[0] * (1 - 1e-6)
    assert np.isclose(std.min(), 0.2 * est.y_scale_[0] * est.std_scale_[0], rtol=1e-5)


class MeanOnly(nn.Module):
    def __init__(self, n_features=5, n_outputs=1):
        super().__init__()
        self.lin = nn.Linear(n_features, n_outputs)

    def forward(self, X):
        return self.lin(X)


def test_regressor_user_module_with_means_only_gets_learned_log_variance(regression_data):
    X, y = regression_data
    untouched = reg(module=MeanOnly, alpha=0.0, max_epochs=20, lr=1e-2, batch_size=64).fit(X, y)
    assert untouched.log_var_.log_var.item() == 0.0  # no KL term: no gradient reaches it
    est = reg(module=MeanOnly, alpha=0.5, max_epochs=20, lr=1e-2, batch_size=64).fit(X, y)
    assert est.log_var_.log_var.shape == (1,)
    mean, std = est.predict(X, return_std=True)
    assert np.unique(std).size == 1 and mean.shape == (200,)
    # the KL term pulls log sigma**2 from its initial 0 toward its optimum,
    # log(mean residual**2 + tau**2) in standardized units
    residual = (y - mean) / est.y_scale_[0]
    optimum = np.log(np.mean(residual**2) + est.tau**2)
    log_var = est.log_var_.log_var.item()
    assert optimum < log_var < -0.1
    # the reported std of y removes the soft target's width, sqrt(sigma**2 - tau**2),
    # times the fitted scale
    expected = np.sqrt(max(np.exp(log_var) - est.tau**2, est.tau**2)) * est.y_scale_[0]
    expected *= est.std_scale_[0]
    np.testing.assert_allclose(std, expected, rtol=1e-5)


def test_regressor_rejects_module_with_wrong_width(regression_data):
    X, y = regression_data
    with pytest.raises(ValueError, match="returns 3 columns"):
        reg(module=MeanOnly, module__n_outputs=3).fit(X, y)


# ----------------------------------------------------------------------------
# defaults meet the documented quality bars
def test_default_classifier_reaches_97_percent_on_digits(digits):
    X, y = digits
    # one stratified 75/25 split and seed: a floor under the 0.983 that the user guide's
    # early-stopping section measures on this split (seeds 0, 1, 2); seed 0 scores 0.987
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    est = SoftRegCNNClassifier(random_state=0, device="cpu").fit(X_tr, y_tr)
    assert est.score(X_te, y_te) >= 0.97


def test_default_regressor_on_diabetes_against_ridge():
    """The user guide's diabetes figures, on the 80/20 splits of ``benchmarks/real_data.py``.

    On its three splits (seeds 0, 1, 2) the defaults' mean R² is above Ridge's (0.410
    against 0.403). Single splits differ from Ridge by -0.14 to +0.03, and over ten splits
    Ridge is ahead (0.458 against 0.440, each wins five); a dropout of 0.1 or none there
    falls 0.029 behind, so the ten-split gap is held under 0.025.
    """
    X, y = load_diabetes(return_X_y=True)
    ours, ridge = [], []
    for seed in range(10):
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=seed)
        scaler = StandardScaler().fit(X_tr)
        X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
        ridge.append(Ridge().fit(X_tr, y_tr).score(X_te, y_te))
        est = SoftRegRegressor(random_state=seed, device="cpu").fit(X_tr, y_tr)
        ours.append(est.score(X_te, y_te))
    ours, ridge = np.array(ours), np.array(ridge)
    # the benchmark's three splits, as the defaults table shows them: margin 0.0065 there
    assert ours[:3].mean() > ridge[:3].mean()
    # ten splits: measured 0.018 behind Ridge (dropout 0.5), 0.022 at 0.3, 0.029 at 0.1 or 0
    assert ours.mean() > ridge.mean() - 0.025


def test_split_output_clamps_the_head_log_variances(regression_data):
    """The log-variances of a 2 * n_outputs head are clamped to [log 1e-6, log 1e6]."""
    X, y = regression_data
    est = reg(alpha=0.1, max_epochs=1).fit(X, y)
    mu, log_var = est._split_output(torch.tensor([[1.0, 50.0], [2.0, -50.0], [3.0, 0.5]]))
    torch.testing.assert_close(mu, torch.tensor([[1.0], [2.0], [3.0]]))
    expected = torch.log(torch.tensor([[1e6], [1e-6], [float(np.exp(0.5))]]))
    torch.testing.assert_close(log_var, expected)


def test_regressor_constant_target_keeps_a_unit_scale(regression_data):
    """A constant y has std 0: y_scale_ falls back to 1 and predictions stay finite."""
    X, _ = regression_data
    est = reg(alpha=0.1).fit(X, np.full(len(X), 7.0))
    np.testing.assert_array_equal(est.y_mean_, [7.0])
    np.testing.assert_array_equal(est.y_scale_, [1.0])
    mean, std = est.predict(X, return_std=True)
    assert np.isfinite(mean).all() and np.isfinite(std).all()


def test_partial_fit_rejects_labels_unseen_in_the_first_call(small_digits):
    X, y = small_digits
    first = np.isin(y, [0, 2, 4])
    est = clf(max_epochs=1).fit(X[first], y[first])
    with pytest.raises(ValueError, match=r"previously unseen labels: \[3\]"):
        est.partial_fit(X[y == 3], y[y == 3])


def test_valid_acc_best_marks_each_new_highest_accuracy(small_digits):
    """valid_acc is greater-is-better: valid_acc_best is true at each epoch whose
    accuracy beats every earlier one (what a Checkpoint on it saves)."""
    from skorch.dataset import ValidSplit

    X, y = small_digits
    est = clf(max_epochs=6, train_split=ValidSplit(0.3, stratified=True, random_state=0)).fit(X, y)
    acc = est.history[:, "valid_acc"]
    expected = [i == 0 or acc[i] > max(acc[:i]) for i in range(len(acc))]
    assert est.history[:, "valid_acc_best"] == expected
    assert acc[-1] > acc[0]  # at least one later epoch improves (not all best flags trivial)
