"""Dataset inputs, image folders and torchvision models at their edges (found by a bug
hunt): label dtypes, empty and mistyped Datasets, shapes at predict, 16-bit images,
pretrained weights, sizes no model runs on, and shape-changing augmentation."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from sk_softreg import SoftRegCNNClassifier, SoftRegRegressor
from sk_softreg.datasets import ImageFolderDataset, load_image_folder

TINY = dict(module__channels=(4, 8), module__hidden_units=16, max_epochs=1, random_state=0,
            device="cpu")
IMAGES = torch.rand(40, 1, 8, 8)
LABELS = np.arange(40) % 2


def clf(**kwargs):
    return SoftRegCNNClassifier(**{**TINY, **kwargs})


@pytest.mark.parametrize("dtype", [torch.int32, torch.float32, torch.bool, torch.int64])
def test_dataset_labels_of_any_dtype_train(dtype):
    labels = torch.tensor(LABELS).to(dtype)
    est = clf().fit(TensorDataset(IMAGES, labels))
    reference = clf().fit(IMAGES.numpy(), labels.numpy())
    np.testing.assert_array_equal(est.classes_, reference.classes_)
    np.testing.assert_array_equal(est.predict_proba(IMAGES.numpy()),
                                  reference.predict_proba(IMAGES.numpy()))


def test_empty_datasets_get_scikit_learns_wording():
    empty = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="Found a Dataset with 0 sample"):
        clf(classes=[0, 1]).fit(empty)
    with pytest.raises(ValueError, match="Found a Dataset with 0 sample"):
        clf().fit(IMAGES.numpy(), LABELS).predict(empty)


def test_predicting_a_dataset_checks_the_fitted_shape():
    est = clf().fit(IMAGES.numpy(), LABELS)
    with pytest.raises(ValueError, match=r"images of shape \(1, 16, 16\), but .* \(1, 8, 8\)"):
        est.predict(TensorDataset(torch.rand(4, 1, 16, 16), torch.zeros(4)))
    reg = SoftRegRegressor(max_epochs=1, random_state=0, device="cpu").fit(
        np.random.default_rng(0).normal(size=(30, 5)), np.arange(30.0))
    with pytest.raises(ValueError, match=r"shape \(7,\), but SoftRegRegressor is expecting 5"):
        reg.predict(TensorDataset(torch.rand(4, 7), torch.zeros(4)))
    assert reg.predict(TensorDataset(torch.rand(4, 5), torch.zeros(4))).shape == (4,)


class _PILImages(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return Image.new("L", (8, 8)), i % 2


@pytest.mark.parametrize("data, says", [
    (lambda: (_PILImages(),), r"the first sample is a PIL\..*Image.*v2\.ToImage"),
    (lambda: (TensorDataset(IMAGES, torch.tensor(LABELS)), LABELS), r"yields \(x, y\) pairs"),
    (lambda: (TensorDataset(IMAGES.double(), torch.tensor(LABELS)),), r"float32 .*torch\.float64"),
])
def test_mistyped_dataset_samples_are_named(data, says):
    with pytest.raises(ValueError, match=says):
        clf().fit(*data())


def test_16_bit_images_are_scaled_by_their_depth(tmp_path):
    gradient = np.tile(np.linspace(0, 65535, 8).astype(np.uint16), (8, 1))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(gradient).save(tmp_path / name / "0.png")
    assert Image.open(tmp_path / "a" / "0.png").mode.startswith("I")
    expected = gradient[0] / 65535
    X, _, _ = load_image_folder(tmp_path, grayscale=True)
    np.testing.assert_allclose(X[0, 0, 0], expected, atol=1e-6)  # not clipped at 255/255
    X_rgb, _, _ = load_image_folder(tmp_path)
    assert X_rgb.shape[1] == 3 and np.allclose(X_rgb[0, :, 0], expected)
    np.testing.assert_allclose(ImageFolderDataset(tmp_path, grayscale=True)[0][0][0, 0].numpy(),
                               expected, atol=1e-6)


def test_pretrained_torchvision_weights_are_refused_not_ignored():
    pytest.importorskip("torchvision")
    with pytest.raises(ValueError, match="pretrained torchvision weights are not supported"):
        clf(module="resnet18", module__weights="IMAGENET1K_V1").fit(
            np.random.rand(8, 3, 16, 16).astype(np.float32), np.arange(8) % 2)


def test_a_torchvision_model_that_runs_on_no_size_says_so():
    pytest.importorskip("torchvision")
    from sk_softreg._torchvision import TorchvisionClassifierNet

    with pytest.raises(ValueError, match=r"runs on none of the image sizes .*\(1, 16, 24\)"):
        TorchvisionClassifierNet("vit_b_16", input_shape=(1, 16, 24), n_classes=2)


def test_a_train_transform_that_changes_the_shape_is_refused():
    v2 = pytest.importorskip("torchvision.transforms.v2")
    X = np.random.rand(32, 1, 12, 12).astype(np.float32)
    with pytest.raises(ValueError, match=r"train_transform must keep the images' shape \(1, 12, 12\)"):
        clf(train_transform=v2.Compose([v2.RandomCrop(8)])).fit(X, np.arange(32) % 2)


def test_channels_last_images_get_a_warning():
    rgb = np.random.rand(20, 8, 8, 3).astype(np.float32)  # (n, H, W, C)
    with pytest.warns(UserWarning, match=r"stored channels-last .*X\.transpose\(0, 3, 1, 2\)"):
        clf().fit(rgb, np.arange(20) % 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        clf().fit(rgb.transpose(0, 3, 1, 2), np.arange(20) % 2)  # (n, C, H, W): no warning
        clf().fit(np.random.rand(20, 1, 8, 3).astype(np.float32), np.arange(20) % 2)
