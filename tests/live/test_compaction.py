"""Compaction at publish removes the images of the entries it dropped, and only those that
nothing else names: not an entry kept, a bundle of the dataset or a job's snapshot, and never
a file outside the dataset's added-items folder."""

from __future__ import annotations

import json

import numpy as np

from live.compaction import compact
from live.publish import ADDED_FILE
from state.changes import ADD, DELETE, Change
from state.changes_sqlite import SqliteChangeLog


def _bundle(models, version: str, dataset: str, added: dict[str, str]) -> None:
    folder = models / version
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"dataset": dataset}))
    (folder / ADDED_FILE).write_text(json.dumps(added))


def test_only_images_nothing_names_are_removed(tmp_path):
    root, models = tmp_path / "d", tmp_path / "models"
    items = root / ".items"
    items.mkdir(parents=True)
    (root / "train").mkdir()
    names = ("a1", "a2", "b1", "c1", "c2", "s1", "link", "own")
    for name in names:
        (items / f"{name}.png").write_bytes(name.encode())
    (root / "train" / "x.png").write_bytes(b"dataset file")
    (tmp_path / "outside.png").write_bytes(b"outside")
    (items / "link.png").unlink()
    (items / "link.png").symlink_to(items / "own.png")
    log = SqliteChangeLog(tmp_path / "jobs.sqlite3")
    vector = np.ones(2, dtype=np.float32)

    def add(item: str, path: str) -> Change:
        return Change(ADD, item, path=path, vector=vector)

    log.append("d", [add("a", ".items/a1.png"), add("b", ".items/b1.png"),
                     add("c", ".items/c1.png"), add("s", ".items/s1.png"),
                     add("x", "train/x.png"), add("o", "../outside.png"),
                     add("l", ".items/link.png")], known={})
    log.append("d", [add("a", ".items/a2.png"), add("c", ".items/c2.png"),
                     add("s", ".items/s1.png"), add("x", ".items/own.png"),
                     add("o", ".items/own.png"), add("l", ".items/own.png")],
               known={}, upsert=True)
    log.append("d", [Change(DELETE, "b")], known={})
    # An older version still indexes c's first image; another dataset's names nothing here.
    _bundle(models, "v1", "d", {"c": ".items/c1.png"})
    _bundle(models, "v2", "other", {"a": ".items/a1.png"})

    done = compact(log, "d", root, models, log.last_seq("d"), also_named=[])
    assert done.dropped == 7
    # a1 and b1 go. c1 (a bundle), s1 (named again by the entry kept) stay; the dataset's own
    # file, the file outside and a link's target are never touched (the link itself goes).
    assert sorted(p.name for p in done.removed) == ["a1.png", "b1.png", "link.png"]
    assert sorted(p.name for p in items.iterdir()) == ["a2.png", "c1.png", "c2.png",
                                                       "own.png", "s1.png"]
    assert (root / "train" / "x.png").exists() and (tmp_path / "outside.png").exists()
    assert [c.seq for c in log.since("d", 0)] == [8, 9, 10, 11, 12, 13, 14]


def test_a_jobs_snapshot_keeps_its_images(tmp_path):
    root, models = tmp_path / "d", tmp_path / "models"
    (root / ".items").mkdir(parents=True)
    for name in ("a1", "a2"):
        (root / ".items" / f"{name}.png").write_bytes(b"x")
    log = SqliteChangeLog(tmp_path / "jobs.sqlite3")
    vector = np.ones(2, dtype=np.float32)
    log.append("d", [Change(ADD, "a", path=".items/a1.png", vector=vector)], known={})
    log.append("d", [Change(ADD, "a", path=".items/a2.png", vector=vector)], known={},
               upsert=True)
    done = compact(log, "d", root, models, 2, also_named=[".items/a1.png"])
    assert done.dropped == 1 and done.removed == []
    assert (root / ".items" / "a1.png").exists()
