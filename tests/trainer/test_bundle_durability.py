"""Publishing survives a power loss, a second publisher and a crash: the order of fsyncs and
renames on real files, a real concurrent publish of the same version, leftovers swept."""

import os
import time
from pathlib import Path

import pytest

from trainer import bundle as bundle_module
from trainer import checkpoint
from trainer.bundle import (
    current_version,
    list_versions,
    set_current,
    validate,
    withdraw,
    write_bundle,
)
from trainer.errors import BundleError
from trainer.leftovers import sweep_leftovers


class FileSystemLog:
    """Every fsync (by the path its descriptor names), rename and replace, in order, while the
    real calls do their work."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str, str]] = []
        real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

        def fsync(fd: int) -> None:
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), ""))
            real_fsync(fd)

        def rename(src, dst) -> None:
            self.events.append(("rename", str(Path(src).resolve()), str(Path(dst).resolve())))
            real_rename(src, dst)

        def replace(src, dst) -> None:
            self.events.append(("rename", str(Path(src).resolve()), str(Path(dst).resolve())))
            real_replace(src, dst)

        for module in (os, bundle_module.os, checkpoint.os):
            monkeypatch.setattr(module, "fsync", fsync)
            monkeypatch.setattr(module, "rename", rename)
            monkeypatch.setattr(module, "replace", replace)

    def index(self, kind: str, path: Path, dst: Path | None = None) -> int:
        for i, (k, a, b) in enumerate(self.events):
            if k == kind and a == str(path.resolve()) and (dst is None or b == str(dst)):
                return i
        raise AssertionError(f"no {kind} of {path}: {self.events}")


def test_files_then_folder_then_pointer_reach_the_disk_in_that_order(finished_run, tmp_path,
                                                                     monkeypatch):
    models = tmp_path / "models"
    log = FileSystemLog(monkeypatch)
    final = write_bundle(finished_run, models, dataset="d", version="v1")
    set_current(models, "v1")
    (_, tmp, _), = [e for e in log.events if e[0] == "rename" and e[2] == str(final.resolve())]
    tmp = Path(tmp)
    published = log.index("rename", tmp, final.resolve())
    for part in final.iterdir():  # every file's data, before the folder is renamed into place
        assert log.index("fsync", tmp / part.name) < published, part.name
    assert log.index("fsync", tmp) < published  # the folder's entries, too
    root = str(models.resolve())
    assert any(e == ("fsync", root, "") for e in log.events[published:])  # the rename, too
    # The collection's CURRENT: its new content on disk before it replaces the old one, then
    # that rename.
    folder = models / "collections" / "d"
    pointer = next(i for i, e in enumerate(log.events)
                   if e[0] == "rename" and e[2] == str((folder / "CURRENT").resolve()))
    assert pointer > published
    assert log.events[pointer - 1] == ("fsync", log.events[pointer][1], "")
    assert ("fsync", str(folder.resolve()), "") in log.events[pointer:]
    assert current_version(models) == "v1"


def test_a_version_published_meanwhile_by_another_process_of_the_job_is_kept(finished_run,
                                                                           tmp_path):
    models = tmp_path / "models"
    steps = []

    def other_process_finishes_first() -> None:
        steps.append(len(steps))
        if len(steps) == 3:  # just before our rename: the other one renames first
            write_bundle(finished_run, models, dataset="d", version="v1",
                         extra={"by": "other"})

    path = write_bundle(finished_run, models, dataset="d", version="v1", extra={"by": "us"},
                        exist_ok=True, check=other_process_finishes_first)
    assert validate(path)["by"] == "other" and list_versions(models) == ["v1"]
    # Our copy is gone; beside the version, only the collections' folder (registered).
    assert sorted(p.name for p in models.iterdir()) == ["collections", "v1"]
    assert [p.name for p in (models / "collections").iterdir()] == ["d"]
    # Without exist_ok a version is never published twice.
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(finished_run, models, dataset="d", version="v1")
    # A cancel arriving between the steps leaves nothing behind.
    with pytest.raises(KeyboardInterrupt):
        write_bundle(finished_run, models, dataset="d", version="v2",
                     check=lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    assert sorted(p.name for p in models.iterdir()) == ["collections", "v1"]


def test_withdrawn_and_leftover_bundles(finished_run, tmp_path):
    models = tmp_path / "models"
    for version in ("v1", "v2"):
        write_bundle(finished_run, models, dataset="d", version=version)
    set_current(models, "v1")
    with pytest.raises(BundleError, match="current"):
        withdraw(models, "v1")
    withdraw(models, "v2")
    assert list_versions(models) == ["v1"] and not (models / "v2").exists()
    # A collection's only version withdrawn (a first model canceled while it was published):
    # the collection goes too; one that keeps a version stays.
    write_bundle(finished_run, models, dataset="e", version="e1")
    assert (models / "collections" / "e").is_dir()
    withdraw(models, "e1")
    assert not (models / "collections" / "e").exists() and (models / "collections" / "d").is_dir()
    # What crashes left: a half-written bundle and a temporary CURRENT, an hour old or not.
    old_dir, young_dir = models / ".tmp-v3-aaaaaa", models / ".tmp-v4-bbbbbb"
    old_file = models / ".CURRENT.x1y2z3.tmp"
    old_pointer = models / "collections" / "d" / ".PREVIOUS.a1b2c3.tmp"
    for d in (old_dir, young_dir):
        d.mkdir()
        (d / "encoder.pt").write_bytes(b"partial")
    old_file.write_text("v9\n")
    old_pointer.write_text("v9\n")
    hour_ago = time.time() - 3601
    for path in (old_dir, old_file, old_pointer):
        os.utime(path, (hour_ago, hour_ago))
    removed = sweep_leftovers(models)
    assert sorted(removed) == sorted([old_dir.name, old_file.name,
                                      "collections/d/.PREVIOUS.a1b2c3.tmp"])
    assert young_dir.exists() and list_versions(models) == ["v1"]
    assert current_version(models) == "v1"
