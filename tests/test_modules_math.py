"""Values of the default networks and losses in sk_softreg.modules."""

import pytest
import torch

from sk_softreg.modules import GaussianMLP, HalfMSELoss, PinballLoss, SoftRegCNN, dropout_free_pair


@pytest.mark.parametrize("h, w, pooled", [(2, 2, (1, 1)), (2, 5, (1, 2)), (1, 2, (1, 1)), (3, 1, (1, 1))])
def test_cnn_pools_every_side_at_least_two_long(h, w, pooled):
    net = SoftRegCNN(input_shape=(1, h, w), n_classes=3, channels=(4,), hidden_units=5)
    features = net.features(torch.zeros(2, 1, h, w))
    assert features.shape == (2, 4, *pooled)
    assert net.classifier[1].in_features == 4 * pooled[0] * pooled[1]


def test_gaussian_mlp_starts_at_unit_variance():
    torch.manual_seed(0)
    net = GaussianMLP(n_features=3, n_outputs=2, hidden_units=(8,), dropout=0.0)
    out = net(torch.randn(5, 3))
    assert out.shape == (5, 4)
    assert torch.equal(out[:, 2:], torch.zeros(5, 2))  # log sigma^2 = 0 for any input
    assert not torch.equal(out[:, :2], torch.zeros(5, 2))


def test_dropout_free_pair_is_none_without_dropout_in_training():
    torch.manual_seed(0)
    net = GaussianMLP(n_features=3, hidden_units=(6, 6), dropout=0.3)
    X = torch.randn(4, 3)
    h, clean = dropout_free_pair(net.body.eval(), X, lambda index, layer, x: layer(x))
    assert clean is None
    torch.testing.assert_close(h, net.body(X))
    h, clean = dropout_free_pair(net.body.train(), X, lambda index, layer, x: layer(x))
    assert clean is not None
    torch.testing.assert_close(clean, net.body.eval()(X))


def test_half_mse_loss_is_half_the_mean_squared_error():
    loss = HalfMSELoss()(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(loss, torch.tensor(1.0))  # 0.5 * (4 + 0) / 2


@pytest.mark.parametrize("quantile", [0.0, 1.0, -0.1])
def test_pinball_loss_rejects_quantiles_outside_the_open_interval(quantile):
    with pytest.raises(ValueError, match="0 < quantile < 1"):
        PinballLoss(quantile=quantile)


def test_pinball_loss_reductions():
    input, target = torch.zeros(3), torch.tensor([2.0, -2.0, 1.0])
    per_row = PinballLoss(quantile=0.9, reduction="none")(input, target)
    torch.testing.assert_close(per_row, torch.tensor([1.8, 0.2, 0.9]))
    torch.testing.assert_close(PinballLoss(0.9, reduction="sum")(input, target), per_row.sum())
    torch.testing.assert_close(PinballLoss(0.9)(input, target), per_row.mean())
    with pytest.raises(ValueError, match="reduction 'mean', 'sum' or 'none'; got 'max'"):
        PinballLoss(0.9, reduction="max")


def test_pinball_loss_weights_the_two_sides_by_q_and_one_minus_q():
    loss = PinballLoss(quantile=0.9)
    # under-prediction (y above mu) costs q per unit, over-prediction 1 - q
    torch.testing.assert_close(loss(torch.zeros(1), torch.tensor([2.0])), torch.tensor(1.8))
    torch.testing.assert_close(loss(torch.zeros(1), torch.tensor([-2.0])), torch.tensor(0.2))
