"""How much memory a loaded model takes, and which collections to unload to stay within
SERVE_MEMORY_MB.

A loaded bundle's size is measured from what is loaded: its vectors (the array itself), its
FAISS index (the index file's size: a flat or IVF index holds in memory what its file holds)
and its encoder's weights as loaded (torch: its inference graph's), or its ONNX graph's file
(onnxruntime, whose session holds the weights the file has). Before a load, the version's size
is predicted from its files on disk (the same three parts), so that room is made before the
memory is taken; the collections already loaded count as measured.

A collection grows after it loads: live adds, and a rebuild of its index, hold memory beyond
the bundle (LiveIndex.grown_bytes), counted in its loaded size; the budget is checked again
after each request, so growth unloads other collections as a load would.

The rule: when a load would take the loaded total over the budget, the least recently used
collections with no request in flight are unloaded, oldest first, until it fits (or none is
left to unload: a collection larger than the whole budget still loads, alone). A collection in
use is never picked; one that is unloaded under nothing keeps answering the requests holding
its model (each holds its Served reference) and reloads on its next request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.bundle import Bundle
from trainer.export import ONNX_FILE

MB = 1024 * 1024
BUNDLE_FILES = ("embeddings.npy", "index.faiss", "encoder.pt")


def _file_bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def encoder_bytes(model: Any, folder: Path) -> int:
    """A loaded encoder's weights: what its torch graph holds (trainer/encoder_file.py), else
    (an ONNX session) the graph file it was made from."""
    nbytes = getattr(model, "nbytes", None)
    return int(nbytes) if nbytes is not None else _file_bytes(folder / ONNX_FILE)


def bundle_bytes(bundle: Bundle) -> int:
    """The memory a loaded bundle takes (see the module docstring)."""
    vectors = bundle.vectors.nbytes if isinstance(bundle.vectors, np.ndarray) else 0
    return (int(vectors) + _file_bytes(bundle.path / "index.faiss")
            + encoder_bytes(bundle.model, bundle.path))


def disk_bytes(models_root: Path, version: str) -> int:
    """A version's size before it is loaded: its vectors, index and encoder files."""
    folder = Path(models_root) / version
    return sum(_file_bytes(folder / name) for name in BUNDLE_FILES)


@dataclass
class Loaded:
    """What the rule knows of one collection: its loaded bytes, when a request last used it,
    how many requests hold it now."""

    name: str
    nbytes: int
    last_used: float
    in_flight: int


def to_unload(loaded: Iterable[Loaded], incoming: int, budget: int | None,
              keep: str | None = None) -> list[str]:
    """The collections to unload so that `incoming` more bytes fit `budget` (None: no budget):
    idle ones, least recently used first; never `keep` (the one loading)."""
    entries = list(loaded)
    if budget is None:
        return []
    total = sum(e.nbytes for e in entries) + incoming
    chosen = []
    for entry in sorted(entries, key=lambda e: e.last_used):
        if total <= budget:
            break
        if entry.name == keep or entry.in_flight > 0 or entry.nbytes <= 0:
            continue
        chosen.append(entry.name)
        total -= entry.nbytes
    return chosen


def budget_bytes(memory_mb: float) -> int | None:
    """SERVE_MEMORY_MB in bytes; 0 means no budget."""
    return int(memory_mb * MB) if memory_mb > 0 else None


def fits(sizes: Mapping[str, int], incoming: int, budget: int | None) -> bool:
    return budget is None or sum(sizes.values()) + incoming <= budget
