"""Small real datasets that ship with libraries, written as image folders (demo and tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


# Regions of scikit-learn's two sample photos (427 x 640), as (photo, left, top, right, bottom)
# boxes in pixels; a class may span several boxes. Each is one kind of surface, so a patch
# anywhere inside, at any scale, flipped and re-lit, still shows it: what stays the same is the
# texture, which raw pixels (aligned, exact colours) do not capture and a learned embedding can.
PHOTO_REGIONS: dict[str, list[tuple[str, int, int, int, int]]] = {
    "sky": [("china", 340, 0, 640, 130), ("china", 0, 0, 80, 130)],
    "roof": [("china", 120, 75, 300, 112), ("china", 80, 240, 340, 275),
             ("china", 215, 355, 325, 392)],
    "pavilion": [("china", 110, 185, 310, 228), ("china", 90, 282, 330, 322)],
    "lake": [("china", 350, 245, 545, 292), ("china", 10, 265, 70, 305)],
    "trees": [("china", 360, 330, 640, 427), ("china", 0, 340, 200, 427),
              ("china", 560, 160, 640, 300)],
    "petals": [("flower", 190, 105, 260, 330), ("flower", 360, 105, 430, 330),
               ("flower", 200, 270, 420, 335)],
    "flower_heart": [("flower", 268, 172, 352, 248)],
    "leaves": [("flower", 0, 0, 170, 300), ("flower", 460, 0, 640, 330)],
}


# The config `bash deploy/local.sh up` trains with on `write_photo_patches` (and bench/demo.py
# measures): about 3 minutes on two idle CPU cores for its 1,600 training patches. Three rounds
# (instance discrimination, then two rounds of growing neighbourhoods) of 30 epochs; a high lr,
# decayed once late in each round, because 25 steps an epoch must move a randomly initialised
# net far. k=50 suits 200 training items a class.
DEMO_CONFIG: dict[str, Any] = {
    "backbone": "small_cnn", "rounds": 3, "epochs_per_round": 30, "batch_size": 64, "lr": 0.06,
    "lr_milestones": [0.75], "knn_k": 50,
}


def render_patch(photo: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator,
                 out_side: int, min_side: int = 24, max_side: int = 72) -> np.ndarray:
    """A square patch at a random scale and place inside `box` of `photo` (H x W x 3 uint8),
    randomly flipped and rotated by a multiple of 90 degrees, with brightness, contrast and
    per-channel colour jitter and a little noise; resized to out_side x out_side."""
    left, top, right, bottom = box
    side = int(rng.integers(min_side, max_side + 1))
    side = min(side, right - left, bottom - top)
    x = int(rng.integers(left, right - side + 1))
    y = int(rng.integers(top, bottom - side + 1))
    patch = Image.fromarray(photo[y:y + side, x:x + side]).resize(
        (out_side, out_side), Image.Resampling.BILINEAR)
    pixels = np.asarray(patch, dtype=np.float32)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    if rng.random() < 0.5:
        pixels = pixels[::-1]
    pixels = np.rot90(pixels, int(rng.integers(0, 4)))
    # Contrast about the mean, then brightness and colour cast as per-channel gamma curves:
    # a gamma never pushes a bright surface (the sky) into a flat white square, as a gain would.
    unit = pixels / 255.0
    mean = unit.mean()
    unit = np.clip((unit - mean) * rng.uniform(0.7, 1.3) + mean, 0.0, 1.0)
    gamma = rng.uniform(0.6, 1.6) * rng.uniform(0.85, 1.15, size=3)
    pixels = 255.0 * unit ** gamma + rng.normal(0, 3, size=unit.shape)
    return np.clip(pixels, 0, 255).round().astype(np.uint8)


def write_photo_patches(root: str | Path, per_class: int = 250, test_share: float = 0.2,
                        seed: int = 0, side: int = 48) -> Path:
    """Patches of scikit-learn's two bundled sample photos (china.jpg, flower.jpg): one class
    per region of `PHOTO_REGIONS`, `per_class` patches each drawn by `render_patch`, as JPEGs
    in root/{train,test}/<region>/ (a share `test_share` of each class in test/)."""
    from sklearn.datasets import load_sample_images

    bundle = load_sample_images()
    photos = {Path(name).stem: image
              for name, image in zip(bundle.filenames, bundle.images, strict=True)}
    root = Path(root)
    rng = np.random.default_rng(seed)
    n_test = round(per_class * test_share)
    for label, boxes in PHOTO_REGIONS.items():
        # Boxes are drawn in proportion to their area, so a class covers its surface evenly.
        areas = np.array([(r - le) * (b - t) for _, le, t, r, b in boxes], dtype=np.float64)
        picks = rng.choice(len(boxes), size=per_class, p=areas / areas.sum())
        for i, pick in enumerate(picks):
            name, *box = boxes[pick]
            pixels = render_patch(photos[name], tuple(box), rng, side)
            folder = root / ("test" if i < n_test else "train") / label
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, mode="RGB").save(folder / f"{label}_{i:04d}.jpg", quality=92)
    return root
