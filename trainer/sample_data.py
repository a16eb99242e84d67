"""Small real datasets that ship with libraries, written as image folders (demo and tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(root: str | Path, test_share: float = 0.2, seed: int = 0,
                 upscale: int = 4) -> Path:
    """scikit-learn's 1,797 handwritten digits as greyscale PNGs in root/{train,test}/<digit>/.

    The 8x8 images are upscaled (nearest neighbour) so they look like ordinary image files.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = Path(root)
    rng = np.random.default_rng(seed)
    is_test = rng.random(len(digits.images)) < test_share
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        split = "test" if is_test[i] else "train"
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image * (255.0 / 16.0)).round().astype(np.uint8)
        img = Image.fromarray(pixels, mode="L")
        if upscale > 1:
            img = img.resize((8 * upscale, 8 * upscale), Image.Resampling.NEAREST)
        img.save(folder / f"{i:04d}.png")
    return root
