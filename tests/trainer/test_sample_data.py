"""The demo's photo patches: the layout the loader reads, reproducible from a seed, and hard
for raw pixels (the point of the demo is a model that beats them)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from trainer import baseline
from trainer.data import open_collection
from trainer.loader import prepare
from trainer.sample_data import PHOTO_REGIONS, render_patch, write_photo_patches


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_layout_splits_and_classes(tmp_path):
    root = write_photo_patches(tmp_path / "pp", per_class=10, test_share=0.2, seed=1)
    assert sorted(p.name for p in root.iterdir()) == ["test", "train"]
    for split, count in (("train", 8), ("test", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(PHOTO_REGIONS)
        for region in PHOTO_REGIONS:
            assert len(list((root / split / region).glob("*.jpg"))) == count
    collection = open_collection(root)
    assert sorted(collection.classes) == sorted(PHOTO_REGIONS)
    assert len(collection) == 80 and int(collection.is_eval.sum()) == 16
    assert (collection.labels >= 0).all()
    with Image.open(next((root / "train" / "sky").iterdir())) as img:
        assert img.size == (48, 48) and img.mode == "RGB"


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = _files(write_photo_patches(tmp_path / "a", per_class=4, seed=7))
    b = _files(write_photo_patches(tmp_path / "b", per_class=4, seed=7))
    c = _files(write_photo_patches(tmp_path / "c", per_class=4, seed=8))
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_every_patch_is_a_different_image(tmp_path):
    root = write_photo_patches(tmp_path / "pp", per_class=30, seed=0)
    digests = set()
    for path in root.rglob("*.jpg"):
        with Image.open(path) as img:
            pixels = np.asarray(img)
        assert pixels.std() > 1  # not a flat fill
        digests.add(hashlib.sha256(pixels.tobytes()).hexdigest())
    assert len(digests) == 30 * len(PHOTO_REGIONS)


def test_a_patch_stays_inside_its_box():
    # A photo that is white only inside the box: every patch drawn from the box is bright,
    # whatever its scale, place, flips and lighting.
    photo = np.zeros((100, 120, 3), dtype=np.uint8)
    photo[20:60, 30:110] = 200
    rng = np.random.default_rng(0)
    for _ in range(50):
        patch = render_patch(photo, (30, 20, 110, 60), rng, out_side=16)
        assert patch.shape == (16, 16, 3) and patch.min() > 60


def test_raw_pixels_do_not_solve_the_demo_data(tmp_path):
    # The demo's claim rests on this: the same weighted kNN on downscaled pixels is far from
    # perfect on these patches (well above chance, 1/8, too: the classes differ in colour).
    root = write_photo_patches(tmp_path / "pp", seed=0)
    found = baseline.measure(prepare(open_collection(root), 32, num_workers=0), k=50, sigma=0.1)
    assert found is not None and 0.3 < found["pixel_knn_top1"] < 0.85
