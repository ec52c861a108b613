"""sk_softreg.datasets: image folders into arrays, and lazily."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from _image_folder import make_image_folder

from sk_softreg import SoftRegCNNClassifier
from sk_softreg.datasets import ImageFolderDataset, list_image_files, load_image_folder


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "imgs", n_per_class=4, size=10)


def test_load_image_folder_arrays(folder):
    X, y, paths = load_image_folder(folder)
    assert X.shape == (12, 3, 10, 10) and X.dtype == np.float32
    assert 0.0 <= X.min() and X.max() <= 1.0
    assert list(np.unique(y)) == ["circle", "cross", "square"]
    assert all(p.endswith(".png") and f"/{label}/" in p for p, label in zip(paths, y))
    X1, _, _ = load_image_folder(folder, image_size=(6, 8), grayscale=True)
    assert X1.shape == (12, 1, 6, 8)


def test_folder_trains_a_classifier_from_arrays_and_lazily(folder, tmp_path):
    X, y, _ = load_image_folder(folder, grayscale=True)
    X_new, y_new, _ = load_image_folder(
        make_image_folder(tmp_path / "new", n_per_class=4, size=10, seed=1), grayscale=True
    )
    params = {
        "max_epochs": 20, "batch_size": 4, "module__channels": (4, 8),
        "module__hidden_units": 16, "random_state": 0, "device": "cpu",
    }
    arrays = SoftRegCNNClassifier(**params).fit(X, y)
    assert arrays.score(X_new, y_new) == 1.0  # it learned the three shapes
    lazy = SoftRegCNNClassifier(**params).fit(ImageFolderDataset(folder, grayscale=True))
    assert lazy.classes_.tolist() == ["circle", "cross", "square"]  # the folder names
    np.testing.assert_array_equal(lazy.predict_proba(X_new), arrays.predict_proba(X_new))
    assert lazy.predict(X_new).tolist() == y_new.tolist()


def test_unreadable_files_are_skipped_with_one_warning(folder):
    for i in range(5):
        (folder / "cross" / f"broken{i}.png").write_bytes(b"not a png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X, _, paths = load_image_folder(folder)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1
    assert "Skipped 5 unreadable" in messages[0] and "broken0.png" in messages[0]
    assert "and 2 more" in messages[0]
    assert len(X) == 12 and not any("broken" in p for p in paths)
    with pytest.warns(UserWarning, match="Skipped 5"):
        ds = ImageFolderDataset(folder)
    assert len(ds) == 12


def test_bad_folders(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_image_folder(tmp_path / "empty")
    from PIL import Image

    Image.new("RGB", (5, 5)).save(folder / "circle" / "odd.png")
    with pytest.raises(ValueError, match="different sizes.*image_size"):
        load_image_folder(folder)


def test_lazy_dataset_matches_arrays(folder):
    X, y, _ = load_image_folder(folder, image_size=8)
    ds = ImageFolderDataset(folder, image_size=8)
    assert ds.classes == ["circle", "cross", "square"]
    assert len(ds) == len(X)
    for i in (0, 5, 11):
        image, target = ds[i]
        np.testing.assert_array_equal(image.numpy(), X[i])
        assert ds.classes[target] == y[i]


def test_labels_match_the_files_when_some_are_skipped(folder):
    for i in range(2):
        (folder / "circle" / f"broken{i}.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="Skipped 2"):
        X, y, paths = load_image_folder(folder)
    assert len(X) == len(y) == len(paths) == 12
    assert [Path(p).parent.name for p in paths] == y.tolist()


def test_rgb_images_are_height_by_width(folder):
    X, _, _ = load_image_folder(folder, image_size=(6, 8))
    assert X.shape == (12, 3, 6, 8)


def test_hidden_folders_are_skipped_and_extensions_match_any_case(folder):
    from PIL import Image

    (folder / ".cache").mkdir()
    Image.new("RGB", (10, 10)).save(folder / ".cache" / "thumb.png")
    Image.new("RGB", (10, 10)).save(folder / "square" / "UPPER.PNG")
    classes, samples = list_image_files(folder)
    assert classes == ["circle", "cross", "square"]
    assert len(samples) == 13 and any(f.endswith("UPPER.PNG") for f, _ in samples)
