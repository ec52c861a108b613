"""Read folders of images laid out like torchvision's ``ImageFolder``.

``root/<class name>/<image file>``: each sub-folder is a class, named by the
folder; classes are sorted by name. :func:`load_image_folder` reads everything
into arrays the estimators take; :class:`ImageFolderDataset` reads one image at
a time for folders that do not fit in memory.
"""

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ._warnings import warn

__all__ = ["ImageFolderDataset", "list_image_files", "load_image_folder"]

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_SHOWN = 3  # unreadable files named in the warning


def list_image_files(path):
    """Class names and ``(file, class index)`` pairs of an image folder.

    Parameters
    ----------
    path : str or path-like
        The root folder; each sub-folder holds the images of one class.

    Returns
    -------
    classes : list of str
        Sorted sub-folder names.
    samples : list of (str, int)
        Image files (by extension, sorted) with the index of their class.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a folder.
    ValueError
        If it holds no class sub-folder with image files.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {str(path)!r} does not exist or is not a folder.")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    samples = []
    for index, name in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(root / name, followlinks=True)):
            for file in sorted(files):
                if file.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(dirpath, file), index))
    if not samples:
        raise ValueError(
            f"Image folder {str(path)!r} holds no images: expected class sub-folders with "
            f"image files ({', '.join(IMG_EXTENSIONS)})."
        )
    return classes, samples


def _read_image(file, image_size, grayscale):
    """float32 array (C, H, W) in [0, 1]: 8-bit images divided by 255, 16-bit ones
    (Pillow's modes ``I;16...`` and ``I``, one channel) by 65535."""
    with Image.open(file) as img:
        if img.mode.startswith("I"):  # Pillow's convert("L"/"RGB") would clip them at 255
            img = Image.fromarray(np.asarray(img, dtype=np.float32) / 65535.0, mode="F")
            scale = 1.0
        elif img.mode == "F":
            raise ValueError(
                f"{str(file)!r} is a 32-bit float image, whose range is not known; convert it "
                "to 8 or 16 bits."
            )
        else:
            img = img.convert("L" if grayscale else "RGB")
            scale = 255.0
        if image_size is not None:
            img = img.resize((image_size[1], image_size[0]), Image.BILINEAR)
        array = np.asarray(img, dtype=np.float32) / scale
    if array.ndim == 2 and not grayscale:
        array = np.repeat(array[..., None], 3, axis=2)  # a 16-bit gray image as RGB
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _parse_size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        image_size = (image_size, image_size)
    size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(
            f"image_size must be None, an int or a (height, width) pair of positive ints. "
            f"Got {image_size!r} instead."
        )
    return size


def _warn_unreadable(bad):
    if bad:
        shown = ", ".join(repr(str(f)) for f in bad[:_SHOWN])
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        warn(f"Skipped {len(bad)} unreadable image file(s): {shown}{more}.")


def _read_images(files, size, grayscale):
    """Read ``files``; return the images and a kept-mask, warning once about failures."""
    images, kept, bad = [], [], []
    for file in files:
        try:
            images.append(_read_image(file, size, grayscale))
            kept.append(True)
        except (OSError, UnidentifiedImageError, ValueError):
            bad.append(file)
            kept.append(False)
    _warn_unreadable(bad)
    return images, kept


def load_image_folder(path, image_size=None, grayscale=False):
    """Load a folder of class sub-folders of images into arrays.

    Parameters
    ----------
    path : str or path-like
        Root folder in torchvision ``ImageFolder`` layout:
        ``path/<class name>/<image>``.
    image_size : int, (int, int) or None, default=None
        Resize every image to ``(height, width)`` (an int: square). ``None``
        keeps the sizes, which must then all be equal.
    grayscale : bool, default=False
        Read the images as one channel; else as RGB (three channels).

    Returns
    -------
    X : ndarray of shape (n_images, C, H, W), float32 in [0, 1]
    y : ndarray of shape (n_images,) of str
        The class (sub-folder) name of each image.
    paths : ndarray of shape (n_images,) of str
        The file of each image.

    Warns
    -----
    UserWarning
        Once, counting the files that could not be read (and naming the first
        few); they are skipped.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from sk_softreg.datasets import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for label in ("cat", "dog"):
    ...     (root / label).mkdir()
    ...     Image.new("RGB", (6, 4)).save(root / label / "a.png")
    >>> X, y, paths = load_image_folder(root, image_size=8, grayscale=True)
    >>> X.shape, y.tolist()
    ((2, 1, 8, 8), ['cat', 'dog'])
    """
    size = _parse_size(image_size)
    classes, samples = list_image_files(path)
    images, kept = _read_images([file for file, _ in samples], size, grayscale)
    labels = [classes[index] for (file, index), ok in zip(samples, kept) if ok]
    files = [file for (file, _), ok in zip(samples, kept) if ok]
    if not images:
        raise ValueError(f"Image folder {str(path)!r} holds no readable images.")
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ValueError(
            f"The images in {str(path)!r} have different sizes ({len(shapes)} distinct, e.g. "
            f"{sorted(shapes)[:2]}); pass image_size to resize them."
        )
    return np.stack(images), np.asarray(labels), np.asarray(files)


class ImageFolderDataset(torch.utils.data.Dataset):
    """A lazy ``torch.utils.data.Dataset`` over an image folder.

    Files are listed at construction and read one by one in ``__getitem__``,
    so the folder need not fit in memory. Unreadable files are found by a
    verification pass at construction (one warning) and left out. Targets are
    indices into ``classes``; ``SoftRegCNNClassifier().fit(dataset)`` learns the
    folder names as ``classes_`` and predicts them.

    Parameters
    ----------
    path : str or path-like
        Root folder in ``ImageFolder`` layout.
    image_size : int, (int, int) or None, default=None
        Resize each image to ``(height, width)``.
    grayscale : bool, default=False
        One channel instead of RGB.
    transform : callable or None, default=None
        Applied to each float32 image tensor ``(C, H, W)``.

    Attributes
    ----------
    classes : list of str
        Class names, sorted; targets index into it.
    samples : list of (str, int)
        Readable files and their class index.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from sk_softreg.datasets import ImageFolderDataset
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for label in ("cat", "dog"):
    ...     (root / label).mkdir()
    ...     Image.new("L", (8, 8)).save(root / label / "a.png")
    >>> ds = ImageFolderDataset(root, grayscale=True)
    >>> len(ds), ds[1][0].shape, ds[1][1]
    (2, torch.Size([1, 8, 8]), 1)
    """

    def __init__(self, path, image_size=None, grayscale=False, transform=None):
        self.path = path
        self.image_size = _parse_size(image_size)
        self.grayscale = grayscale
        self.transform = transform
        self.classes, samples = list_image_files(path)
        self.samples, bad = [], []
        for file, index in samples:
            try:
                with Image.open(file) as img:
                    img.verify()
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
                bad.append(file)
                continue
            self.samples.append((file, index))
        _warn_unreadable(bad)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        file, target = self.samples[i]
        image = torch.from_numpy(_read_image(file, self.image_size, self.grayscale))
        if self.transform is not None:
            image = self.transform(image)
        return image, target
