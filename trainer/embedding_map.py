"""A 2-D map of a bundle's embeddings for people to look at: PCA to 50 dimensions, then t-SNE
(scikit-learn), on at most MAX_POINTS items (a random sample of larger collections).

Stored in the bundle beside the vectors:
    map.npy        M x 2 float32 coordinates, scaled into [0, 1] x [0, 1]
    map_rows.npy   M int64 bundle rows the points stand for (ascending)
A bundle without these files (published before maps existed) is still a valid bundle.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from trainer.files import atomic_file

log = logging.getLogger(__name__)

MAP_FILE = "map.npy"
ROWS_FILE = "map_rows.npy"
MAX_POINTS = 50_000
PCA_DIMS = 50


def compute(vectors: np.ndarray, max_points: int = MAX_POINTS,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rows, coordinates): the sampled rows and their 2-D positions in [0, 1]^2."""
    n = len(vectors)
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if n <= max_points else np.sort(rng.choice(n, max_points, replace=False))
    x = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    m = len(rows)
    if m < 5:  # too few points for t-SNE's perplexity: a straight projection does
        coords = _pca(x, 2) if m > 1 else np.zeros((m, 2), dtype=np.float32)
    else:
        from sklearn.manifold import TSNE

        reduced = _pca(x, min(PCA_DIMS, x.shape[1], m - 1))
        coords = TSNE(n_components=2, perplexity=min(30.0, (m - 1) / 3), init="pca",
                      learning_rate="auto", random_state=seed,
                      max_iter=500).fit_transform(reduced)
    return rows.astype(np.int64), _unit_square(np.asarray(coords, dtype=np.float64))


def _pca(x: np.ndarray, dims: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    dims = max(1, min(dims, x.shape[1], len(x)))
    out = PCA(n_components=dims, random_state=0).fit_transform(x)
    if out.shape[1] == 1:  # a single component: put every point on a line
        out = np.hstack([out, np.zeros_like(out)])
    return out


def _unit_square(coords: np.ndarray) -> np.ndarray:
    """Scale both axes by one factor (keeping the map's shape) into [0, 1]^2, centred."""
    if len(coords) == 0:
        return coords.astype(np.float32).reshape(0, 2)
    lo, hi = coords.min(0), coords.max(0)
    span = float((hi - lo).max()) or 1.0
    centred = (coords - (lo + hi) / 2) / span + 0.5
    return centred.astype(np.float32)


def write(bundle_dir: str | os.PathLike[str], vectors: np.ndarray,
          max_points: int = MAX_POINTS) -> int:
    """Compute the map of `vectors` and store it in `bundle_dir`; returns its point count."""
    t0 = time.perf_counter()
    rows, coords = compute(vectors, max_points)
    out = Path(bundle_dir)
    with atomic_file(out / ROWS_FILE) as f:
        np.save(f, rows)
    with atomic_file(out / MAP_FILE) as f:
        np.save(f, coords)
    log.info("embedding map of %d points in %.1fs", len(rows), time.perf_counter() - t0)
    return len(rows)


def load(bundle_dir: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, coordinates), or None when the bundle has no map."""
    path = Path(bundle_dir)
    if not (path / MAP_FILE).exists() or not (path / ROWS_FILE).exists():
        return None
    return np.load(path / ROWS_FILE), np.load(path / MAP_FILE)
