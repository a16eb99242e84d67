"""The living collection on a job's side: the change log position a job trains at.

A job trains on its dataset as the change log left it when the job first started: the log's
position then (its snapshot) is kept in the run folder, so a resumed job sees the same items.
What it trains on and what it publishes are live/collection.py and live/publish.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from state.changes import ChangeLog
from trainer.files import atomic_write_text

SNAPSHOT_FILE = "changes.json"


def snapshot_seq(run_dir: Path, changes: ChangeLog, dataset: str) -> int:
    """The log position a job trains at: taken when it first starts, the same on resumption."""
    path = run_dir / SNAPSHOT_FILE
    if path.exists():
        return int(json.loads(path.read_text())["seq"])
    seq = changes.last_seq(dataset)
    atomic_write_text(path, json.dumps({"dataset": dataset, "seq": seq}))
    return seq
