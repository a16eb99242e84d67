"""Removing added images that no change-log entry names.

An add writes its images before it appends its entries, and keeps them when the append fails
in a way that leaves its outcome unknown (service/items.py); a process killed in between leaves
them too. Such a file is an orphan once it is older than ORPHAN_GRACE_S (an add appends within
seconds of writing) and nothing names it: no entry of the dataset's log, no bundle of the
dataset, no loaded version (live/compaction.py has the one rule). The images of entries that a
compaction dropped are removed by the compaction itself, at publish.

The sweep runs on the API's model-watch thread's schedule: soon after start-up, then every
ORPHAN_SWEEP_S, on a thread of its own, for the datasets of the loaded models.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from live.compaction import named_images
from live.items import ITEMS_DIR
from service.live_view import LiveView
from state.changes import ChangeLog

log = logging.getLogger(__name__)
ORPHAN_GRACE_S = 3600.0
ORPHAN_SWEEP_S = 3600.0


def sweep_orphans(dataset_root: Path, changes: ChangeLog, dataset: str,
                  grace_s: float = ORPHAN_GRACE_S, now: float | None = None,
                  also_named: Iterable[str] = (),
                  models_root: Path | None = None) -> list[Path]:
    """Remove the files under the dataset's added-items folder older than `grace_s` that no
    entry of its log names, nor a bundle of the dataset under `models_root`, nor
    `also_named` (paths relative to the root); returns them."""
    folder = dataset_root / ITEMS_DIR
    cutoff = (time.time() if now is None else now) - grace_s
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    # Candidates first, the log after: an entry appended meanwhile is seen.
    old = [e for e in entries if e.is_file(follow_symlinks=False)
           and e.stat(follow_symlinks=False).st_mtime < cutoff]
    if not old:
        return []
    named = named_images(changes, dataset, models_root, also_named)
    removed = []
    for entry in old:
        if f"{ITEMS_DIR}/{entry.name}" in named:
            continue
        path = folder / entry.name
        path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.info("removed %d added images of dataset %r that no change names", len(removed),
                 dataset)
    return removed


class OrphanSweeper:
    """Runs `sweep_orphans` for the loaded models' datasets when one is due."""

    def __init__(self, models_root: Path | None = None, every_s: float = ORPHAN_SWEEP_S,
                 grace_s: float = ORPHAN_GRACE_S) -> None:
        self.models_root = models_root
        self.every_s, self.grace_s = every_s, grace_s
        self._next = 0.0
        self._thread: threading.Thread | None = None

    def maybe_sweep(self, views: Iterable[LiveView]) -> None:
        if time.monotonic() < self._next or (self._thread and self._thread.is_alive()):
            return
        self._next = time.monotonic() + self.every_s
        targets: dict[tuple[Path | None, str], LiveView] = {}
        for view in views:
            if view.writable and view.dataset:
                targets.setdefault((view.dataset_root, view.dataset), view)
        if targets:
            self._thread = threading.Thread(target=self._sweep, args=(list(targets.values()),),
                                            name="orphan-sweep", daemon=True)
            self._thread.start()

    def _sweep(self, views: list[LiveView]) -> None:
        for view in views:
            assert view.dataset_root is not None and view.changes is not None
            try:
                sweep_orphans(view.dataset_root, view.changes, view.dataset, self.grace_s,
                              also_named=list(view.paths.values()),
                              models_root=self.models_root)
            except Exception:  # a store blip: the next sweep tries again
                log.exception("sweeping the added images of dataset %r failed", view.dataset)
