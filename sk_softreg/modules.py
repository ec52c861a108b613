"""Default networks of the estimators.

Both are plain ``torch.nn.Module`` classes whose constructor arguments are set
through skorch's ``module__*`` parameters. The estimators infer the shape
arguments (``input_shape`` and ``n_classes``; ``n_features`` and
``n_outputs``) from the data at fit time.
"""

import torch
from torch import nn

__all__ = ["SoftRegCNN", "GaussianMLP", "Dropout16", "LogVariance", "HalfMSELoss", "PinballLoss"]


class SoftRegCNN(nn.Module):
    """A small CNN that adapts to any C x H x W input with H, W >= 1.

    Each block is two 3x3 convolutions (padding 1, ReLU) followed by a max-pool
    that halves each spatial side that is at least 2 long, so 8x8 digits, 28x28
    images and 1 x F strips of tabular features all work. A fully connected
    head maps the flattened features to one logit per class.

    Parameters
    ----------
    input_shape : tuple of int, default=(1, 8, 8)
        ``(C, H, W)`` of one sample.
    n_classes : int, default=10
        Number of output logits.
    channels : tuple of int, default=(32, 64)
        Output channels of each convolutional block; its length is the depth.
    hidden_units : int, default=128
        Width of the hidden fully connected layer (0 for none).
    dropout : float, default=0.25
        Dropout before the output layer.

    Examples
    --------
    >>> import torch
    >>> net = SoftRegCNN(input_shape=(1, 1, 5), n_classes=3)
    >>> net(torch.zeros(2, 1, 1, 5)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self, input_shape=(1, 8, 8), n_classes=10, channels=(32, 64), hidden_units=128, dropout=0.25
    ):
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        layers = []
        for out_c in channels:
            pool = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
            layers += [
                nn.Conv2d(c, out_c, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(out_c, out_c, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(pool),
            ]
            c, h, w = out_c, h // pool[0], w // pool[1]
        self.features = nn.Sequential(*layers)
        head = [nn.Flatten()]
        n_flat = c * h * w
        if hidden_units:
            head += [nn.Linear(n_flat, hidden_units), nn.ReLU()]
            n_flat = hidden_units
        head += [nn.Dropout(dropout), nn.Linear(n_flat, n_classes)]
        self.classifier = nn.Sequential(*head)

    def forward(self, X):
        return self.classifier(self.features(X))


def dropout16(x, p, training=True):
    """Inverted dropout ``x * keep / (1 - p)``, with ``keep`` drawn from 16-bit random integers.

    Each element is kept where a uniform 16-bit integer ``u`` (four of them
    from one 64-bit draw of torch's generator) satisfies
    ``u >= round(p * 2**16)``: the drop probability is ``p`` rounded to a
    multiple of ``2**-16``, and every element of ``x`` has its own draw. On a
    CPU this costs a fraction of ``torch.nn.functional.dropout``'s
    ``bernoulli_`` draw, one per element.

    Parameters
    ----------
    x : Tensor
    p : float
        Drop probability, in ``[0, 1]``.
    training : bool, default=True
        Without training, ``x`` itself (as in eval mode).

    Returns
    -------
    Tensor
        Of ``x``'s shape.
    """
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    n = x.numel()
    # like x's first (n + 3) // 4 elements, so that under vmap each member draws its own
    words = torch.empty_like(x.reshape(-1)[: (n + 3) // 4], dtype=torch.int64)
    bits = words.random_(-(2**63), 2**63 - 1).view(torch.int16)[:n].view(x.shape)
    keep = bits >= round(p * 2**16) - 2**15
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


class Dropout16(nn.Dropout):
    """``nn.Dropout`` whose keep masks come from 16-bit random integers (:func:`dropout16`).

    The same layer as ``nn.Dropout(p)`` (inverted dropout in training, the
    identity in eval mode), with ``p`` rounded to a multiple of ``2**-16`` and
    a cheaper draw. :class:`GaussianMLP` uses it.

    Examples
    --------
    >>> import torch
    >>> layer = Dropout16(0.5).eval()
    >>> bool(torch.equal(layer(torch.ones(3)), torch.ones(3)))
    True
    """

    def forward(self, input):
        return dropout16(input, self.p, self.training)


class GaussianMLP(nn.Module):
    """An MLP with a mean head and a log-variance head.

    The output has ``2 * n_outputs`` columns: the predicted means, then the
    predicted log-variances ``s = log sigma^2`` (DESIGN section 3.2).

    Parameters
    ----------
    n_features : int, default=1
        Number of input columns.
    n_outputs : int, default=1
        Number of targets.
    hidden_units : tuple of int, default=(64,)
        Width of each hidden layer.
    dropout : float, default=0.5
        Dropout (:class:`Dropout16`) after each hidden layer (small tabular data sets overfit
        easily; less suits large ones). :class:`~sk_softreg.SoftRegRegressor`
        sets it from the number of training rows unless ``module__dropout``
        is given.

    Examples
    --------
    >>> import torch
    >>> net = GaussianMLP(n_features=4, n_outputs=2)
    >>> net(torch.zeros(3, 4)).shape
    torch.Size([3, 4])
    """

    def __init__(self, n_features=1, n_outputs=1, hidden_units=(64,), dropout=0.5):
        super().__init__()
        layers = []
        width = int(n_features)
        for units in hidden_units:
            layers += [nn.Linear(width, units), nn.ReLU()]
            if dropout:
                layers.append(Dropout16(dropout))
            width = units
        self.body = nn.Sequential(*layers)
        self.mean = nn.Linear(width, n_outputs)
        self.log_var = nn.Linear(width, n_outputs)
        nn.init.zeros_(self.log_var.weight)
        nn.init.zeros_(self.log_var.bias)

    def forward(self, X, dropout_free=False):
        """The means and log-variances, ``(n, 2 * n_outputs)``.

        With ``dropout_free=True`` (in training), also the output with the
        dropout layers switched off, from the same pass: the layers before
        the first dropout are computed once. :class:`~sk_softreg.SoftRegRegressor`'s
        KL term uses it (a module without this keyword gets a second forward
        pass instead).

        Returns
        -------
        Tensor, or a pair ``(output, output_without_dropout)`` with ``dropout_free=True``
        """
        if not dropout_free:
            return self._heads(self.body(X))
        h, clean = dropout_free_pair(self.body, X, lambda index, layer, x: layer(x))
        return self._heads(h), self._heads(h if clean is None else clean)

    def _heads(self, h):
        # the two heads as one matrix product: the means, then the log-variances
        weight = torch.cat([self.mean.weight, self.log_var.weight])
        bias = torch.cat([self.mean.bias, self.log_var.bias])
        return nn.functional.linear(h, weight, bias)


def dropout_free_pair(layers, X, apply):
    """``layers`` on ``X``, and the same path without dropout, in one walk.

    The path without dropout parts from the main one at the first dropout
    layer in training mode (the layers before it are computed once) and then
    skips every dropout layer. ``apply(index, layer, x)`` computes one layer
    (``layer(x)`` for a module; :mod:`sk_softreg._stacked_layers` computes it
    on stacked weights).

    Returns
    -------
    h : Tensor
        The output of ``layers``.
    clean : Tensor or None
        The output without dropout, or None where no dropout layer is in
        training mode (then it is ``h``).
    """
    h, clean = X, None
    for index, layer in enumerate(layers):
        dropout = isinstance(layer, nn.Dropout)
        if clean is None and dropout and layer.training:
            clean = h  # the paths part here
        elif clean is not None and not dropout:
            clean = apply(index, layer, clean)
        h = apply(index, layer, h)
    return h, clean


class LogVariance(nn.Module):
    """One learned log-variance per output, for regression modules that return means only.

    Parameters
    ----------
    n_outputs : int
        Number of targets.
    """

    def __init__(self, n_outputs=1):
        super().__init__()
        self.log_var = nn.Parameter(torch.zeros(n_outputs))


class HalfMSELoss(nn.MSELoss):
    """Half the mean squared error, ``mean(0.5 * (input - target)**2)``.

    The regressor's default data loss: with it, the mean gets the same
    gradient from the data term as from the Gaussian KL at ``sigma = 1``.
    """

    def forward(self, input, target):
        return 0.5 * super().forward(input, target)


class PinballLoss(nn.Module):
    """The pinball (quantile) loss, ``mean(max(q * (y - mu), (q - 1) * (y - mu)))``.

    Its minimizer over ``mu`` is the ``q``-quantile of ``y`` given ``x``. As the
    criterion of :class:`~sk_softreg.SoftRegRegressor`
    (``criterion=PinballLoss, criterion__quantile=0.05``, with ``alpha=0``: the
    KL term would pull ``mu`` back to the mean) ``predict`` returns that
    quantile, in y's units (standardizing y moves quantiles with it). Three such
    fits (the lower, upper and 0.5 quantiles) are what MAPIE's
    ``ConformalizedQuantileRegressor(..., prefit=True)`` takes; see the user
    guide.

    Parameters
    ----------
    quantile : float, default=0.5
        The quantile level ``q``, in ``(0, 1)``.
    reduction : {"mean", "sum", "none"}, default="mean"
        As in torch's losses: the mean or the sum of the elementwise losses, or
        the losses themselves (which ``sample_weight`` uses).

    Examples
    --------
    >>> import torch
    >>> loss = PinballLoss(quantile=0.9)
    >>> float(loss(torch.zeros(2), torch.tensor([1.0, -1.0])))  # (0.9 * 1 + 0.1 * 1) / 2
    0.5
    """

    def __init__(self, quantile=0.5, reduction="mean"):
        super().__init__()
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"PinballLoss needs 0 < quantile < 1; got quantile={quantile!r}.")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(
                f"PinballLoss takes reduction 'mean', 'sum' or 'none'; got {reduction!r}."
            )
        self.quantile = float(quantile)
        self.reduction = reduction

    def forward(self, input, target):
        diff = target - input
        loss = torch.maximum(self.quantile * diff, (self.quantile - 1.0) * diff)
        if self.reduction == "none":
            return loss
        return loss.sum() if self.reduction == "sum" else loss.mean()
