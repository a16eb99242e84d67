"""The one rule every stored embedding obeys: a finite vector of length 1.

Every encoder ends in an L2 normalisation, searches score by inner product, and weighted kNN
reads those products as cosines: one vector of another length would stand first in every
search with a meaningless score. So each place that keeps vectors checks them where they enter:
a run's embeddings after the forward pass (trainer/loader.py), a bundle before it is published
(trainer/bundle.py), and a change-log entry's vector when it is read (state/changes.py).
"""

from __future__ import annotations

import numpy as np

# Far above float32 rounding of a normalised vector (~1e-7 per component), far below any vector
# that was not normalised.
TOLERANCE = 1e-3


def off_unit_rows(vectors: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Rows of an N x D array that are not finite vectors of length 1 (within TOLERANCE).
    Read a chunk at a time in float32: a memory-mapped million rows are never copied whole."""
    bad = []
    for start in range(0, len(vectors), chunk):
        x = np.asarray(vectors[start:start + chunk], dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        bad.append(start + np.flatnonzero(~(np.abs(norms - 1.0) <= TOLERANCE)))  # NaN, inf too
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def describe(vectors: np.ndarray, rows: np.ndarray, names: list[str] | None = None,
             shown: int = 5) -> str:
    """'3 vectors are not of length 1: row 7 (norm 1.9e+14), ...' for an error message."""
    parts = []
    for r in rows[:shown]:
        with np.errstate(over="ignore", invalid="ignore"):
            norm = float(np.sqrt(np.square(np.asarray(vectors[r], dtype=np.float64)).sum()))
        name = names[r] if names is not None else f"row {r}"
        parts.append(f"{name} (norm {norm:.3g})")
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    noun = "vector is" if len(rows) == 1 else "vectors are"
    return f"{len(rows)} {noun} not of length 1: " + ", ".join(parts) + more
