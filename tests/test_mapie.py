"""SoftRegRegressor inside MAPIE 1.x: split conformal and conformalized quantile regression."""

import numpy as np
import pytest

pytest.importorskip("mapie", minversion="1.6")
from mapie.regression import ConformalizedQuantileRegressor, SplitConformalRegressor

from sk_softreg import SoftRegRegressor
from sk_softreg.modules import PinballLoss

PARAMS = dict(module__dropout=0.0, max_epochs=30, batch_size=64, lr=1e-3, early_stopping=False,
              random_state=0, device="cpu")


def heteroscedastic(n, seed):
    """y = x + noise whose std grows from 0.1 at x = 0 to 1.1 at |x| = 2."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 1))
    return x, x[:, 0] + rng.normal(size=n) * (0.1 + 0.5 * np.abs(x[:, 0]))


# Fixed data seeds, not chosen by calibration. The coverage band 0.86-0.95 below is about
# +-2.5 sd around 0.9 for 400 calibration and 1,000 test rows (sd about 0.018); measured
# 0.911 (std-normalized), 0.917 (absolute) and 0.925 (CQR).
@pytest.fixture(scope="module")
def splits():
    return heteroscedastic(600, 0), heteroscedastic(400, 1), heteroscedastic(1000, 2)


@pytest.fixture(scope="module")
def gaussian_model(splits):
    (X, y), _, _ = splits
    return SoftRegRegressor(alpha=1.0, tau=0.05, **PARAMS).fit(X, y)


def interval_stats(X, y, intervals):
    low, high = intervals[:, 0, 0], intervals[:, 1, 0]
    width = high - low
    outer, inner = np.abs(X[:, 0]) > 1.5, np.abs(X[:, 0]) < 0.5
    return np.mean((y >= low) & (y <= high)), width, width[outer].mean() / width[inner].mean()


def test_pinball_loss_fits_the_requested_quantile(splits):
    # at a minimum of the empirical pinball loss about a fraction q of the
    # training targets lies below the prediction (the output bias is free)
    (X, y), _, _ = splits
    for q in (0.1, 0.9):
        est = SoftRegRegressor(criterion=PinballLoss, criterion__quantile=q, **PARAMS).fit(X, y)
        assert np.mean(y <= est.predict(X)) == pytest.approx(q, abs=0.02)


def test_pinball_loss_rejects_a_quantile_outside_0_1(splits):
    (X, y), _, _ = splits
    est = SoftRegRegressor(criterion=PinballLoss, criterion__quantile=1.5, **PARAMS)
    with pytest.raises(ValueError, match=r"0 < quantile < 1; got quantile=1.5"):
        est.fit(X, y)


def test_split_conformal_std_normalized_uses_the_predicted_std(splits, gaussian_model):
    _, (X_cal, y_cal), (X_te, y_te) = splits
    mapie = SplitConformalRegressor(
        gaussian_model, confidence_level=0.9, conformity_score="std_normalized", prefit=True
    ).conformalize(X_cal, y_cal)
    points, intervals = mapie.predict_interval(X_te)
    np.testing.assert_allclose(points, gaussian_model.predict(X_te))
    coverage, width, ratio = interval_stats(X_te, y_te, intervals)
    assert 0.86 <= coverage <= 0.95
    assert (width > 0).all()
    assert ratio > 1.5  # wider where the noise is larger: return_std reaches MAPIE


def test_split_conformal_fits_an_unfitted_regressor(splits):
    (X, y), (X_cal, y_cal), (X_te, y_te) = splits
    mapie = SplitConformalRegressor(
        SoftRegRegressor(alpha=1.0, tau=0.05, **PARAMS), confidence_level=0.9, prefit=False
    )
    _, intervals = mapie.fit(X, y).conformalize(X_cal, y_cal).predict_interval(X_te)
    coverage, width, ratio = interval_stats(X_te, y_te, intervals)
    assert 0.86 <= coverage <= 0.95
    assert ratio == pytest.approx(1.0)  # the absolute score gives one width everywhere


def test_cqr_with_three_prefit_pinball_regressors(splits):
    (X, y), (X_cal, y_cal), (X_te, y_te) = splits
    estimators = [  # MAPIE's order: lower, upper, median
        SoftRegRegressor(criterion=PinballLoss, criterion__quantile=q, **PARAMS).fit(X, y)
        for q in (0.05, 0.95, 0.5)
    ]
    cqr = ConformalizedQuantileRegressor(estimators, confidence_level=0.9, prefit=True)
    points, intervals = cqr.conformalize(X_cal, y_cal).predict_interval(X_te)
    coverage, width, ratio = interval_stats(X_te, y_te, intervals)
    assert 0.86 <= coverage <= 0.95
    assert (intervals[:, 0, 0] <= points).all() and (points <= intervals[:, 1, 0]).all()
    assert (width > 0).all()
    assert ratio > 1.5
