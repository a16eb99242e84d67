"""Added images that no change-log entry names are removed once they are old enough."""

import os
import time
import zipfile

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.orphans import sweep_orphans
from state.changes import ADD, DELETE, Change
from state.changes_sqlite import SqliteChangeLog
from tests.conftest import CIFAR_SLICE
from tests.processes import wait_for
from tests.service.conftest import make_settings


def _file(path, age_s: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"image")
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_sweep_removes_old_files_no_entry_names(tmp_path):
    root, log = tmp_path / "d", SqliteChangeLog(tmp_path / "jobs.sqlite3")
    items = root / ".items"
    for name, age in (("named.png", 7200), ("deleted.png", 7200), ("orphan.png", 7200),
                      ("young.png", 60), (".killed.png.tmp", 7200), ("served.png", 7200)):
        _file(items / name, age)
    vector = np.ones(2, dtype=np.float32)
    log.append("d", [Change(ADD, "a", path=".items/named.png", vector=vector),
                     Change(ADD, "b", path=".items/deleted.png", vector=vector)], known={})
    log.append("d", [Change(DELETE, "b")], known={})  # its file may still be read
    removed = sweep_orphans(root, log, "d", grace_s=3600, also_named=[".items/served.png"])
    assert sorted(p.name for p in removed) == [".killed.png.tmp", "orphan.png"]
    assert sorted(p.name for p in items.iterdir()) == ["deleted.png", "named.png",
                                                       "served.png", "young.png"]


def test_the_api_sweeps_orphans_after_start_up(tmp_path, models_template):
    settings = make_settings(tmp_path, models_template)
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        z.extractall(settings.data_root / "cifar-slice")
    items = settings.data_root / "cifar-slice" / ".items"
    _file(items / "orphan.png", 2 * 86_400)
    _file(items / "in-flight.png", 1)
    with TestClient(create_app(settings, enqueue=lambda j: None)):
        wait_for(lambda: not (items / "orphan.png").exists(), 20, "the orphan to be removed")
        assert (items / "in-flight.png").exists()
