"""Build torchvision classification networks sized for the data.

``SoftRegCNNClassifier(module="resnet18")`` resolves the name here. The
network is built with ``weights=None`` (nothing is downloaded) and
``num_classes`` set to the number of classes; its first convolution is rebuilt
for the data's channel count, and small images are upsampled to a size the
architecture can process (see :class:`TorchvisionClassifierNet`).
"""

import difflib

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

__all__ = ["TorchvisionClassifierNet", "torchvision_model_names"]

# candidate input sides tried, smallest first, when ``min_size="auto"``
_PROBE_SIDES = (32, 64, 96, 128, 160, 224, 299)
# constructors whose auxiliary heads are switched off by default
_AUX_LOGITS = ("googlenet", "inception_v3")


def torchvision_model_names():
    """Names of the torchvision classification model constructors.

    Returns
    -------
    list of str
        ``torchvision.models.list_models(module=torchvision.models)``: the
        classification constructors only (no detection or segmentation models).

    Examples
    --------
    >>> from sk_softreg._torchvision import torchvision_model_names
    >>> "resnet18" in torchvision_model_names()
    True
    """
    return torchvision.models.list_models(module=torchvision.models)


def check_model_name(name, caller="SoftRegCNNClassifier"):
    """Raise a ValueError naming close matches when ``name`` is no classification model."""
    names = torchvision_model_names()
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"The 'module' parameter of {caller} got {name!r}, which is not a torchvision "
        f"classification model.{hint} Valid names are "
        "torchvision.models.list_models(module=torchvision.models)."
    )


class TorchvisionClassifierNet(nn.Module):
    """A torchvision classification model adapted to (C, H, W) images and K classes.

    Parameters
    ----------
    name : str
        A torchvision classification constructor, e.g. ``"resnet18"``.
    input_shape : tuple of int
        ``(C, H, W)`` of the images.
    n_classes : int
        Number of classes; passed to the constructor as ``num_classes``.
    min_size : int or "auto", default="auto"
        Images whose height or width is below ``min_size`` are bilinearly
        upsampled (aspect ratio kept) so that their smaller side is ``min_size``
        before entering the network. ``"auto"``: the first of
        max(32, smaller side), then 64, 96, 128, 160, 224, 299 (the larger ones)
        on which the network runs; 8×8 and 28×28 images become 32×32 for ResNets, VGGs,
        MobileNets, EfficientNets, DenseNets. ``0`` never upsamples.
    **constructor_kwargs
        Passed to the torchvision constructor (``module__*`` parameters of the
        estimator), e.g. ``dropout`` or ``width_mult``. ``weights`` is ``None``;
        ``aux_logits`` defaults to ``False`` where the constructor has it.

    Notes
    -----
    The first ``nn.Conv2d`` taking 3 channels is replaced by one with the same
    geometry taking ``C`` channels (freshly initialized: there are no
    pretrained weights to keep). Upsampling, rather than editing each family's
    stem (e.g. a stride-1 ResNet ``conv1`` without max-pool), works the same
    for every family; its cost is more compute on tiny images.

    Examples
    --------
    >>> import torch
    >>> from sk_softreg._torchvision import TorchvisionClassifierNet
    >>> net = TorchvisionClassifierNet("resnet18", input_shape=(1, 8, 8), n_classes=10)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, name, input_shape, n_classes, min_size="auto", **constructor_kwargs):
        super().__init__()
        check_model_name(name)
        if not (min_size == "auto" or (isinstance(min_size, int) and min_size >= 0)):
            raise ValueError(f"min_size must be 'auto' or an int >= 0. Got {min_size!r} instead.")
        channels, height, width = (int(s) for s in input_shape)
        if constructor_kwargs.get("weights") is not None:
            raise ValueError(
                f"module__weights={constructor_kwargs['weights']!r}: pretrained torchvision "
                "weights are not supported (the network is built with weights=None and "
                "trained from its random initialization; nothing is downloaded)."
            )
        builder = torchvision.models.get_model_builder(name)
        kwargs = {"num_classes": int(n_classes), **constructor_kwargs, "weights": None}
        if name in _AUX_LOGITS:
            kwargs.setdefault("aux_logits", False)
            kwargs.setdefault("init_weights", True)  # else GoogLeNet warns
        self.name = name
        self.net = builder(**kwargs)
        if channels != 3:
            _replace_first_conv(self.net, channels)
        if min_size == "auto":
            self.min_size = _probe_min_size(self.net, channels, height, width)
        else:
            self.min_size = min_size

    def forward(self, X):
        side = min(X.shape[-2:])
        if side < self.min_size:
            size = [max(self.min_size, round(s * self.min_size / side)) for s in X.shape[-2:]]
            X = F.interpolate(X, size=size, mode="bilinear", align_corners=False)
        out = self.net(X)
        # GoogLeNet / Inception may still return named tuples in training mode
        return out.logits if hasattr(out, "logits") else out


def _replace_first_conv(net, channels):
    """Swap the first 3-channel ``nn.Conv2d`` for one taking ``channels`` inputs."""
    for name, conv in net.named_modules():
        if isinstance(conv, nn.Conv2d) and conv.in_channels == 3:
            new = nn.Conv2d(
                channels,
                conv.out_channels,
                kernel_size=conv.kernel_size,
                stride=conv.stride,
                padding=conv.padding,
                dilation=conv.dilation,
                groups=1 if conv.groups == 1 else channels,
                bias=conv.bias is not None,
                padding_mode=conv.padding_mode,
            )
            parent_name, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent_name) if parent_name else net, attr, new)
            return
    raise ValueError(
        f"Cannot adapt {type(net).__name__} to {channels}-channel images: no nn.Conv2d "
        "with 3 input channels found."
    )


def _probe_min_size(net, channels, height, width):
    """Smallest candidate side on which ``net`` runs (eval mode, no grad, no RNG use).

    Raises
    ------
    ValueError
        If it runs on none of them (a vision transformer fixed to square inputs,
        say), naming the last error.
    """
    start = min(height, width)
    first = max(start, _PROBE_SIDES[0])
    was_training = net.training
    net.eval()
    error = None
    try:
        for side in (first, *(s for s in _PROBE_SIDES if s > first)):
            h = max(side, round(height * side / start))
            w = max(side, round(width * side / start))
            try:
                with torch.no_grad():
                    net(torch.zeros(1, channels, h, w))
            except (RuntimeError, ValueError, AssertionError) as exc:
                error = exc
                continue
            return side
    finally:
        net.train(was_training)
    raise ValueError(
        f"The torchvision model runs on none of the image sizes tried for ({channels}, "
        f"{height}, {width}) images (up to {_PROBE_SIDES[-1]} pixels, the aspect kept): "
        f"{str(error).splitlines()[0] if error else 'no size'}. Resize the images, or give "
        "module__min_size."
    )
