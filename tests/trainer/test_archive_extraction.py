"""A compressed tar is extracted once, beside itself, and shared by every opener (each POST
/train and each dataset summary opens it): nothing is left in the temporary folder, and
concurrent openers never see half an extraction."""

import multiprocessing
import os
import tarfile
import tempfile
import time

import pytest

from state.settings import Settings
from state.stores import open_store
from trainer.data import open_collection
from worker.submit import check_job

CONFIG = {"backbone": "small_cnn", "rounds": 2, "epochs_per_round": 1, "batch_size": 32,
          "knn_k": 10, "num_workers": 0}


def _tar_gz(src, path):
    with tarfile.open(path, "w:gz") as tf:
        tf.add(src, arcname="cifar10")
        extra = src.parent / "README.txt"
        extra.write_text("not an image")
        tf.add(extra, arcname="cifar10/README.txt")


def _open(path):
    c = open_collection(path)
    return len(c), c.ids[:3], len(c.ignored), c.load(0, 32).shape


def _extractions(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("."))


def test_a_compressed_tar_is_extracted_once_beside_itself(cifar_dir, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    data = tmp_path / "data"
    data.mkdir()
    archive = data / "cifar.tar.gz"
    _tar_gz(cifar_dir, archive)
    # Concurrent openers (the API's requests, a worker's job) all see the whole dataset.
    with multiprocessing.get_context("fork").Pool(3) as pool:
        seen = pool.map(_open, [archive] * 3)
    assert seen == [(120, ["test/airplane/0000.jpg", "test/airplane/0001.jpg",
                           "test/airplane/0002.jpg"], 1, (32, 32, 3))] * 3
    (extracted,) = _extractions(data)

    def stamp():
        folder = data / extracted
        return folder.stat().st_ino, (folder / ".members.json").stat().st_mtime_ns

    first = stamp()
    settings = Settings(data_root=data, models_root=tmp_path / "m", state_root=tmp_path / "s")
    for _ in range(3):  # what POST /train and GET /datasets/{name} do, again and again
        check_job(open_store(settings), settings, "cifar.tar.gz", CONFIG)
        assert _open(archive) == seen[0]
    assert _extractions(data) == [extracted]
    assert stamp() == first  # not extracted again
    assert list(scratch.iterdir()) == []  # nothing leaked into the temporary folder
    # A replaced archive is extracted again, and the old extraction removed.
    (cifar_dir / "train" / "cat" / "0000.jpg").unlink()
    _tar_gz(cifar_dir, archive)
    os.utime(archive, (time.time() + 5, time.time() + 5))
    assert _open(archive)[0] == 119
    assert len(_extractions(data)) == 1 and _extractions(data) != [extracted]


def test_a_broken_archive_leaves_nothing_behind(tmp_path):
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    from trainer.errors import DatasetError

    with pytest.raises(DatasetError, match="not a readable tar archive"):
        open_collection(archive)
    assert _extractions(tmp_path) == []
