"""The raw-pixel baseline and the 2-D embedding map, on cases small enough to check by hand."""

from __future__ import annotations

import numpy as np
import torch

from trainer import baseline, embedding_map
from trainer.collection import Collection
from trainer.loader import Prepared
from trainer.sources import ArraySource


def _prepared(images: np.ndarray, labels: list[int], is_eval: list[bool]) -> Prepared:
    n = len(images)
    collection = Collection(name="t", ids=[f"{i}" for i in range(n)],
                            labels=np.asarray(labels, dtype=np.int64), classes=["a", "b"],
                            is_eval=np.asarray(is_eval), source=ArraySource([images]))
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    x = tensor.float() / 255
    return Prepared(collection, x.mean((0, 2, 3)), x.std((0, 2, 3)).clamp(min=1e-3), tensor)


def test_pixel_vectors_are_standardised_unit_vectors_at_the_asked_side():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    images[0, :, :2] = 255  # top half white
    images[1, :, 2:] = 255  # bottom half white
    v = baseline.pixel_vectors(images, torch.full((3,), 0.5), torch.full((3,), 0.5), side=2)
    assert v.shape == (2, 12)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, rtol=1e-6)
    # Area downscaling to 2x2: rows of +1 and -1 (standardised), opposite in the two images.
    np.testing.assert_allclose(v[0], -v[1], atol=1e-6)
    np.testing.assert_allclose(v[0].reshape(3, 2, 2)[:, 0], 1 / np.sqrt(12), rtol=1e-5)


def test_baseline_scores_what_pixels_can_tell_apart():
    # Class a: a bright left half; class b: a bright right half. Pixels separate them fully.
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(24):
        img = rng.integers(0, 40, size=(8, 8, 3), dtype=np.uint8)
        half = slice(0, 4) if i % 2 == 0 else slice(4, 8)
        img[:, half] = 220
        images.append(img)
        labels.append(i % 2)
    prepared = _prepared(np.stack(images), labels, [i >= 16 for i in range(24)])
    found = baseline.measure(prepared, k=5, sigma=0.1, side=8)
    assert found["pixel_knn_top1"] == 1.0 and found["pixel_knn_protocol"] == "test"
    assert found["pixel_knn_queries"] == 8


def test_baseline_needs_labels():
    images = np.zeros((12, 4, 4, 3), dtype=np.uint8)
    assert baseline.measure(_prepared(images, [-1] * 12, [False] * 12), k=3, sigma=0.1) is None


def test_map_keeps_separate_clusters_apart_in_the_unit_square():
    rng = np.random.default_rng(0)
    centres = np.eye(16, dtype=np.float32)[:2] * 10
    x = np.concatenate([c + rng.normal(0, 0.1, (20, 16)) for c in centres]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows, coords = embedding_map.compute(x)
    assert rows.tolist() == list(range(40)) and coords.shape == (40, 2)
    assert coords.min() >= 0 and coords.max() <= 1
    a, b = coords[:20], coords[20:]
    # Every point is nearer its own cluster's centre than the other's.
    ca, cb = a.mean(0), b.mean(0)
    assert (np.linalg.norm(a - ca, axis=1) < np.linalg.norm(a - cb, axis=1)).all()
    assert (np.linalg.norm(b - cb, axis=1) < np.linalg.norm(b - ca, axis=1)).all()


def test_map_samples_large_collections_and_handles_tiny_ones(tmp_path):
    x = np.random.default_rng(1).normal(size=(30, 8)).astype(np.float32)
    rows, coords = embedding_map.compute(x, max_points=10)
    assert len(rows) == 10 and len(set(rows.tolist())) == 10 and (np.diff(rows) > 0).all()
    assert coords.shape == (10, 2)
    rows, coords = embedding_map.compute(x[:3])  # too few for t-SNE: a projection
    assert coords.shape == (3, 2) and coords.min() >= 0 and coords.max() <= 1
    assert embedding_map.write(tmp_path, x[:4]) == 4
    loaded_rows, loaded = embedding_map.load(tmp_path)
    assert loaded_rows.tolist() == list(range(4)) and loaded.dtype == np.float32
    assert embedding_map.load(tmp_path / "missing") is None
