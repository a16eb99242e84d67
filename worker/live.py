"""The living collection on a job's side: the change log position a job trains at, and the
compaction of the log when a job publishes.

A job trains on its dataset as the change log left it when the job first started: the log's
position then (its snapshot) is kept in the run folder with the images the log had added by
then, so a resumed job sees the same items and its publish reads only the entries after it.
What it trains on and what it publishes are live/collection.py and live/publish.py.

Publishing compacts the log (live/compaction.py) up to a floor: the job's own snapshot,
lowered to the snapshot of every other queued or running job of the dataset, so every job
still reads its own snapshot as it was. A running job that has not written its snapshot yet
may be taking one below any floor: then nothing is compacted (the next publish will).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from live.compaction import Compacted, compact
from live.publish import added_images
from state.changes import ChangeLog
from state.datasets import dataset_folder
from state.jobs import QUEUED, RUNNING, Job, JobStore
from state.settings import Settings
from trainer.files import atomic_write_text

log = logging.getLogger(__name__)
SNAPSHOT_FILE = "changes.json"


@dataclass(frozen=True)
class Snapshot:
    seq: int  # the log position the job trains at
    added: dict[str, str] | None = field(default=None)  # id -> image the log had added


def read_snapshot(run_dir: Path) -> Snapshot | None:
    path = run_dir / SNAPSHOT_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    added = data.get("added")
    return Snapshot(int(data["seq"]), dict(added) if isinstance(added, dict) else None)


def take_snapshot(run_dir: Path, changes: ChangeLog, dataset: str) -> Snapshot:
    """The log position a job trains at: taken when it first starts, the same on resumption."""
    taken = read_snapshot(run_dir)
    if taken is not None:
        return taken
    seq = changes.last_seq(dataset)
    added = added_images(changes.changes_between(dataset, 0, seq))
    atomic_write_text(run_dir / SNAPSHOT_FILE,
                      json.dumps({"dataset": dataset, "seq": seq, "added": added}))
    return Snapshot(seq, added)


def compaction_floor(settings: Settings, store: JobStore, job: Job,
                     own: Snapshot) -> tuple[int, set[str]] | None:
    """The position up to which `job`'s publish may compact its dataset's log, and the
    images the snapshots of the dataset's other jobs name; None when a running job of the
    dataset has no snapshot yet."""
    floor, named = own.seq, set((own.added or {}).values())
    seen: set[str] = set()
    # Running, queued, running again: a job moving between the two is seen in one list.
    for status in (RUNNING, QUEUED, RUNNING):
        jobs, _ = store.list(0, 10_000, status)
        for other in jobs:
            if other.id == job.id or other.dataset != job.dataset or other.id in seen:
                continue
            seen.add(other.id)
            snapshot = read_snapshot(settings.runs_root / other.id)
            if snapshot is None:
                if status == RUNNING:
                    return None
                continue  # queued, never started: its snapshot will be taken after now
            floor = min(floor, snapshot.seq)
            named.update((snapshot.added or {}).values())
    return floor, named


def compact_after_publish(settings: Settings, store: JobStore, changes: ChangeLog, job: Job,
                          own: Snapshot) -> Compacted | None:
    """Compact `job`'s dataset's log up to the floor and remove the images nobody names."""
    found = compaction_floor(settings, store, job, own)
    if found is None:
        log.info("job %s: a running job of dataset %r has no snapshot yet; the change log is "
                 "not compacted this time", job.id, job.dataset)
        return None
    floor, named = found
    return compact(changes, job.dataset, dataset_folder(settings, job.dataset),
                   settings.models_root, floor, also_named=named)
