"""A served model's collection as the change log has changed it since the bundle was published.

The bundle is an immutable snapshot that covers the log up to `changes_seq` (in its manifest);
the view applies every later entry of its dataset's log, in order, to a LiveIndex. An entry's
vector is used as it is when the served model made it; otherwise the image is embedded again
with the served model, so a view never mixes vectors of two models. Every replica builds its own
view from the bundle and the log, so nothing lives only in one process's memory.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path

import numpy as np

from live.embed import embed_files
from live.index import LiveIndex
from live.items import added_image
from live.merge import net_changes
from live.publish import ADDED_FILE
from state.changes import Change, ChangeLog
from trainer.bundle import Bundle

log = logging.getLogger(__name__)
PAGE = 1000  # log entries applied per step


class LiveView:
    def __init__(self, bundle: Bundle, changes: ChangeLog | None,
                 dataset_root: Path | None) -> None:
        self.bundle = bundle
        self.changes = changes
        self.dataset = str(bundle.manifest.get("dataset") or "")
        self.dataset_root = dataset_root
        self.index = LiveIndex(bundle.index, bundle.vectors, bundle.ids, bundle.labels,
                               bundle.classes)
        self.applied = int(bundle.manifest.get("changes_seq") or 0)
        # When the last catch-up began reading (monotonic): everything appended before then
        # is applied.
        self.caught_up_at = -math.inf
        # Items added through the log, by id: their image under the dataset root.
        self.paths: dict[str, str] = _added_paths(bundle.path)
        self._lock = threading.Lock()  # one thread applies entries at a time, in order
        self._rebuilding = threading.Lock()

    @property
    def writable(self) -> bool:
        return self.changes is not None and self.dataset_root is not None

    def catch_up(self) -> int:
        """Apply every entry after the last one applied; returns the position reached."""
        if self.changes is None or not self.dataset:
            return self.applied
        with self._lock:
            began = time.monotonic()
            while True:
                page = self.changes.since(self.dataset, self.applied, PAGE)
                if page:
                    self._apply(page)
                # Past the entries set aside as unreadable too: they are recorded, not retried.
                reached = max(page.last_read, page[-1].seq if page else 0)
                if reached <= self.applied:
                    self.caught_up_at = began
                    return self.applied
                self.applied = reached

    def _apply(self, entries: list[Change]) -> None:
        added, deleted = net_changes(entries)
        version = self.bundle.version
        ready: list[Change] = []
        again: list[Change] = []
        for change in added.values():
            mine = change.vector is not None and change.version == version
            (ready if mine else again).append(change)
        vectors = [np.stack([c.vector for c in ready if c.vector is not None])] if ready else []
        kept = list(ready)
        if again:
            made, usable = self._embed_again(again)
            vectors.append(made)
            kept.extend(usable)
        self.index.apply([(c.id, c.label) for c in kept], np.concatenate(vectors) if vectors
                         else np.zeros((0, self.index.dim), dtype=np.float32), deleted)
        for item in deleted:
            self.paths.pop(item, None)
        self.paths.update({c.id: c.path for c in kept if c.path})

    def _embed_again(self, entries: list[Change]) -> tuple[np.ndarray, list[Change]]:
        """Vectors of the served model for entries another model embedded; an entry whose
        image cannot be read or decoded is left out."""
        root = self.dataset_root
        named: list[Change] = []
        paths: list[Path] = []
        for change in entries:
            file = added_image(root, change.path) if root is not None else None
            if file is not None:
                named.append(change)
                paths.append(file)
            else:
                log.warning("item %s cannot be embedded again (no image in the dataset); left "
                            "out", change.id)

        def unusable(pos: int, exc: Exception) -> None:
            log.warning("item %s cannot be embedded again (%s); left out", named[pos].id, exc)

        vectors, used = embed_files(self.bundle.model, paths, unusable)
        return vectors, [named[pos] for pos in used]

    def rebuild_if_due(self) -> bool:
        """Compact the index when changes pass their threshold (in the calling thread; other
        threads keep searching and writing meanwhile)."""
        if not self.index.rebuild_due() or not self._rebuilding.acquire(blocking=False):
            return False
        try:
            kind = str((self.bundle.manifest.get("config") or {}).get("index", "auto"))
            self.index.rebuild(kind)
            log.info("model %s: index rebuilt (%s)", self.bundle.version, self.index.describe())
            return True
        finally:
            self._rebuilding.release()


def _added_paths(bundle_path: Path) -> dict[str, str]:
    """Images of the items the bundle took from the change log (see live/publish.py)."""
    try:
        return dict(json.loads((bundle_path / ADDED_FILE).read_text()))
    except FileNotFoundError:
        return {}
