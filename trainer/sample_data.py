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


def render_scattered(digit: np.ndarray, rng: np.random.Generator, canvas: int = 32,
                     min_side: int = 12, max_side: int = 22) -> np.ndarray:
    """One 8x8 digit (values 0..16) drawn at a random size, position and pair of colours on
    a `canvas` x `canvas` RGB image, with a little noise. Raw pixels lose their alignment and
    their colour; the shape is all that stays."""
    side = int(rng.integers(min_side, max_side + 1))
    glyph = Image.fromarray((digit * (255.0 / 16.0)).astype(np.uint8), mode="L")
    alpha = np.asarray(glyph.resize((side, side), Image.Resampling.BILINEAR),
                       dtype=np.float32)[..., None] / 255.0
    while True:  # two colours far enough apart to read the digit
        background, ink = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
        if np.abs(background - ink).sum() > 200:
            break
    image = np.empty((canvas, canvas, 3), dtype=np.float32)
    image[:] = background
    top, left = rng.integers(0, canvas - side + 1, size=2)
    patch = image[top:top + side, left:left + side]
    image[top:top + side, left:left + side] = patch * (1 - alpha) + ink * alpha
    image += rng.normal(0, 8, size=image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def write_scattered_digits(root: str | Path, test_share: float = 0.2, seed: int = 0,
                           canvas: int = 32) -> Path:
    """scikit-learn's digits, each drawn once by `render_scattered`, as colour PNGs in
    root/{train,test}/<digit>/ (the same train/test split as `write_digits`)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = Path(root)
    rng = np.random.default_rng(seed)
    is_test = rng.random(len(digits.images)) < test_share
    draw = np.random.default_rng(seed + 1)
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = root / ("test" if is_test[i] else "train") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_scattered(image, draw, canvas), mode="RGB").save(
            folder / f"{i:04d}.png")
    return root
