"""Loaded model bundles and the hot swap.

A background thread watches models/CURRENT. When it names a new version, that bundle is loaded
beside the serving one and a single reference is swapped. A request takes the reference once
and uses that bundle for everything it does, so no request fails during a swap and none mixes
two versions. Requests may also pin an older version (kept in a small cache).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from trainer.bundle import Bundle, current_version, list_versions
from trainer.errors import BundleError
from trainer.index import SearchIndex

log = logging.getLogger(__name__)


class Served:
    """A bundle plus what serving derives from it once (the labelled-only kNN index)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.version = bundle.version
        labelled = np.flatnonzero(bundle.labels >= 0)
        self.labelled_rows = labelled
        self.voters: SearchIndex | None = None
        if bundle.labelled:
            if len(labelled) == len(bundle.labels):
                self.voters = bundle.index  # every item votes: search the main index
            else:
                flat = faiss.IndexFlatIP(bundle.dim)
                flat.add(np.ascontiguousarray(bundle.vectors[labelled]))
                self.voters = SearchIndex(flat, "flat", {}, 1.0)

    def voter_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows of the voters index -> rows of the bundle."""
        if self.voters is self.bundle.index:
            return rows
        return np.where(rows >= 0, self.labelled_rows[np.clip(rows, 0, None)], -1)


class ModelRegistry:
    def __init__(self, models_root: Path, device: str = "auto", poll_s: float = 1.0,
                 on_swap: Callable[[str], None] | None = None, pinned_cache: int = 2) -> None:
        self.models_root = Path(models_root)
        self.device = device
        self.poll_s = poll_s
        self.on_swap = on_swap or (lambda version: None)
        self.current: Served | None = None
        self.last_error: str | None = None
        self._pinned: OrderedDict[str, Served] = OrderedDict()
        self._pinned_cache = pinned_cache
        self._lock = threading.Lock()  # serialises loading, never held while serving
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.refresh()
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="model-watch",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # keep serving the old model whatever happens
                log.exception("checking for a new model failed")

    # --- loading --------------------------------------------------------------------------
    def _load(self, version: str) -> Served:
        return Served(Bundle.load(self.models_root, version, device=self.device))

    def refresh(self) -> str | None:
        """Load and swap in the version CURRENT names, if it changed."""
        wanted = current_version(self.models_root)
        serving = self.current
        if wanted is None or (serving is not None and serving.version == wanted):
            return serving.version if serving else None
        with self._lock:
            if self.current is not None and self.current.version == wanted:
                return wanted
            try:
                loaded = self._pinned.pop(wanted, None) or self._load(wanted)
            except (BundleError, OSError, ValueError, KeyError, RuntimeError) as exc:
                # A bad bundle never replaces a good one.
                self.last_error = f"cannot load model {wanted}: {exc}"
                log.error("%s; still serving %s", self.last_error,
                          serving.version if serving else "nothing")
                return serving.version if serving else None
            previous = self.current
            self.current = loaded  # the swap: one reference assignment
            self.last_error = None
            if previous is not None:
                self._remember(previous)
        log.info("serving model %s", wanted)
        self.on_swap(wanted)
        return wanted

    def _remember(self, served: Served) -> None:
        self._pinned[served.version] = served
        while len(self._pinned) > self._pinned_cache:
            self._pinned.popitem(last=False)

    def get(self, version: str | None = None) -> Served:
        """The bundle a request uses: the current one, or a pinned version."""
        serving = self.current
        if serving is None:
            self.refresh()  # a first model may have been published since the last poll
            serving = self.current
        if version is None or (serving is not None and version == serving.version):
            if serving is None:
                raise LookupError("no model has been published yet")
            return serving
        if version not in list_versions(self.models_root):
            raise BundleError(f"no model version {version!r}")
        with self._lock:
            cached = self._pinned.get(version)
            if cached is None:
                cached = self._load(version)
                self._remember(cached)
            else:
                self._pinned.move_to_end(version)
            return cached
