"""Generate a small ImageFolder of PNG files for the tests."""

import numpy as np
from PIL import Image


def make_image_folder(root, n_per_class=6, size=12, classes=("circle", "cross", "square"), seed=0):
    """Write ``root/<class>/<i>.png``: noisy grayscale drawings, one shape per class."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    masks = {
        "circle": np.abs(np.hypot(yy - c, xx - c) - size / 3) < 1.0,
        "cross": (np.abs(yy - c) < 1.5) | (np.abs(xx - c) < 1.5),
        "square": (np.maximum(np.abs(yy - c), np.abs(xx - c)) < size / 3),
    }
    for k, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        mask = masks.get(name, (yy + xx) % (k + 2) == 0)
        for i in range(n_per_class):
            pixels = np.clip(mask * 200 + rng.randint(0, 55, (size, size)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8), mode="L").convert("RGB").save(
                folder / f"{i}.png"
            )
    return root
