"""A user's network class in a module of its own, importable by path (for sk_softreg.load)."""

from torch import nn


class UserMeans(nn.Module):
    """Returns one mean per output; the regressor adds its learned log-variance."""

    def __init__(self, n_features=1, n_outputs=1, hidden=8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, n_outputs))

    def forward(self, X):
        return self.net(X)
