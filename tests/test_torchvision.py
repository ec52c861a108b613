"""torchvision models by name and train_transform augmentation."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from torch import nn
from torchvision.transforms import v2

from sk_softreg import SoftRegCNNClassifier
from sk_softreg._torchvision import TorchvisionClassifierNet, _replace_first_conv


def _images(n=48, channels=1, side=8, n_classes=3, seed=0):
    rng = np.random.RandomState(seed)
    y = np.arange(n) % n_classes
    X = rng.rand(n, channels, side, side).astype(np.float32) * 0.1
    for k in range(n_classes):  # a bright stripe per class
        X[y == k, :, k * side // n_classes, :] += 1.0
    return X, y


def _clf(**kwargs):
    params = {"max_epochs": 1, "batch_size": 16, "random_state": 0, "device": "cpu"}
    params.update(kwargs)
    return SoftRegCNNClassifier(**params)


@pytest.mark.parametrize(
    "name, channels, side",
    [("resnet18", 1, 8), ("resnet18", 3, 28), ("mobilenet_v3_small", 1, 28)],
)
def test_torchvision_module_by_name(name, channels, side):
    X, y = _images(channels=channels, side=side)
    clf = _clf(module=name).fit(X, y)
    net = clf.module_.net
    assert isinstance(clf.module_, TorchvisionClassifierNet)
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == channels
    assert clf.predict_proba(X).shape == (len(X), 3)
    assert set(clf.predict(X)) <= {0, 1, 2}


def test_module_kwargs_reach_the_constructor():
    X, y = _images()
    clf = _clf(module="mobilenet_v3_small", module__dropout=0.0).fit(X, y)
    dropouts = [m for m in clf.module_.net.classifier if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(d.p == 0.0 for d in dropouts)
    narrow = _clf(module="mobilenet_v3_small", module__width_mult=0.5).fit(X, y)
    n_params = sum(p.numel() for p in narrow.module_.parameters())
    assert n_params < sum(p.numel() for p in clf.module_.parameters())


def test_small_images_are_upsampled_to_a_working_size():
    net = TorchvisionClassifierNet("resnet18", input_shape=(1, 8, 8), n_classes=4)
    assert net.min_size == 32
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    big = TorchvisionClassifierNet("resnet18", input_shape=(3, 40, 40), n_classes=4)
    assert big.min_size == 40  # works as is: no upsampling


def test_unknown_model_name_fails_at_fit():
    X, y = _images()
    clf = _clf(module="resnet181")  # __init__ stores it
    with pytest.raises(ValueError, match="not a torchvision classification model.*resnet18"):
        clf.fit(X, y)


def test_torchvision_model_pickles():
    X, y = _images()
    clf = _clf(module="resnet18").fit(X, y)
    clone2 = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(clone2.predict_proba(X), clf.predict_proba(X), rtol=1e-5)


class _CountingTransform(torch.nn.Module):
    """Records the shapes it sees (training batches only should reach it)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return x + 1.0


def test_train_transform_only_on_training_images_per_sample():
    X, y = _images(n=32)
    transform = _CountingTransform()
    clf = _clf(train_transform=transform, max_epochs=2)
    clf.fit(X, y)
    seen = clf.train_transform.calls
    assert len(seen) == 2 * len(X)  # every image of every epoch, one at a time
    assert all(s == (1, 8, 8) for s in seen)
    n = len(seen)
    clf.predict(X)
    clf.predict_proba(X)
    assert len(clf.train_transform.calls) == n


def test_train_transform_changes_training_and_is_seeded():
    X, y = _images()
    aug = v2.RandomAffine(degrees=20, translate=(0.2, 0.2))
    a = _clf(train_transform=aug).fit(X, y)
    b = _clf(train_transform=aug).fit(X, y)
    c = _clf(train_transform=aug, random_state=1).fit(X, y)
    plain = _clf().fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.allclose(a.predict_proba(X), plain.predict_proba(X))
    assert not np.allclose(a.predict_proba(X), c.predict_proba(X))
    # predict is deterministic: no augmentation at predict time
    np.testing.assert_array_equal(a.predict_proba(X), a.predict_proba(X))


def test_train_transform_in_grid_search_and_pickle():
    X, y = _images()
    clf = _clf(train_transform=v2.Compose([v2.RandomAffine(degrees=10)]))
    search = GridSearchCV(clf, {"lambda1": [0.0, 1e-4]}, cv=2).fit(X, y)
    best = search.best_estimator_
    assert isinstance(clone(clf).train_transform, v2.Compose)
    best.set_params(train_transform=v2.RandomHorizontalFlip())  # fitted net: still a param
    assert "train_transform" not in best.cuda_dependent_attributes_
    restored = pickle.loads(pickle.dumps(best))
    assert isinstance(restored.train_transform, v2.RandomHorizontalFlip)
    np.testing.assert_allclose(restored.predict_proba(X), best.predict_proba(X), rtol=1e-6)


def test_train_transform_must_be_callable():
    X, y = _images()
    with pytest.raises(ValueError, match="train_transform"):
        _clf(train_transform="flip").fit(X, y)


def test_network_stays_in_training_mode_after_probing_the_size():
    net = TorchvisionClassifierNet("resnet18", input_shape=(1, 8, 8), n_classes=4)
    assert net.min_size == 32  # the probe ran (in eval mode)
    assert all(m.training for m in net.modules())


def test_auxiliary_heads_are_off_by_default():
    net = TorchvisionClassifierNet("googlenet", input_shape=(3, 32, 32), n_classes=3)
    assert net.net.aux_logits is False and net.net.aux1 is None and net.net.aux2 is None
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_first_conv_keeps_its_geometry_for_other_channel_counts():
    net = nn.Sequential(nn.Conv2d(3, 6, kernel_size=5, stride=2, padding=1, groups=3), nn.ReLU())
    _replace_first_conv(net, 2)
    conv = net[0]
    assert (conv.in_channels, conv.out_channels, conv.groups) == (2, 6, 2)
    assert (conv.kernel_size, conv.stride, conv.padding) == ((5, 5), (2, 2), (1, 1))


def test_upsampling_keeps_the_aspect_ratio():
    net = TorchvisionClassifierNet("resnet18", input_shape=(1, 8, 16), n_classes=2)
    seen = []
    net.net.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[-2:]))
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 1, 8, 16))
    assert tuple(seen[-1]) == (net.min_size, 2 * net.min_size)
