"""What a job trains on and what it publishes when the collection changed, with a real SQLite
change log and real image files."""

import numpy as np
from PIL import Image

from live.collection import training_collection
from live.items import store_image
from live.publish import apply_to_embeddings
from state.changes import ADD, DELETE, Change
from state.changes_sqlite import SqliteChangeLog
from trainer.data import open_collection
from worker.live import snapshot_seq


def _png(colour):
    import io

    buf = io.BytesIO()
    Image.new("RGB", (12, 12), colour).save(buf, "PNG")
    return buf.getvalue()


def test_a_job_trains_on_its_snapshot_and_publishes_what_came_after(cifar_dir, tmp_path):
    log = SqliteChangeLog(tmp_path / "jobs.sqlite3")
    red = store_image(cifar_dir, _png((255, 0, 0)), ".png")
    assert red.startswith(".items/") and (cifar_dir / red).is_file()
    log.append("slice", [Change(ADD, "added/red.png", label="cat", path=red),
                         Change(DELETE, "train/ship/0000.jpg")],
               known={"train/ship/0000.jpg": True})
    run = tmp_path / "run"
    run.mkdir()
    seq = snapshot_seq(run, log, "slice")
    assert seq == 2
    base = open_collection(cifar_dir)
    assert len(base) == 120  # the scan never lists .items/
    snap = training_collection(base, log, "slice", cifar_dir, seq)
    assert len(snap) == 120 and "added/red.png" in snap.ids
    assert "train/ship/0000.jpg" not in snap.ids
    # Changes while the job trains: not in its snapshot, even when it resumes.
    blue = store_image(cifar_dir, _png((0, 0, 255)), ".png")
    log.append("slice", [Change(ADD, "added/blue.png", label="boat", path=blue),
                         Change(DELETE, "added/red.png")], known={})
    assert snapshot_seq(run, log, "slice") == 2
    # ... but applied to what it publishes, the added image embedded by the new encoder.
    saved = {"vectors": np.eye(3, 4, dtype=np.float32),
             "ids": np.asarray(["added/red.png", "test/cat/0001.jpg", "train/cat/0000.jpg"]),
             "labels": np.asarray([0, 0, 0]), "classes": np.asarray(["cat"]),
             "is_eval": np.asarray([False, True, False])}

    def blue_share(paths):
        return np.asarray([[0, 0, 0, np.asarray(Image.open(p))[..., 2].mean() / 255]
                           for p in paths], dtype=np.float32)

    after = log.changes_between("slice", seq, log.last_seq("slice"))
    out = apply_to_embeddings(saved, after, blue_share, cifar_dir)
    assert out["ids"].tolist() == ["test/cat/0001.jpg", "train/cat/0000.jpg", "added/blue.png"]
    assert out["vectors"][-1].tolist() == [0, 0, 0, 1]
    assert out["classes"].tolist() == ["cat", "boat"] and out["labels"].tolist() == [0, 0, 1]
    assert out["is_eval"].tolist() == [True, False, False]
    again = apply_to_embeddings(out, after, blue_share, cifar_dir)  # publishing twice
    assert again["ids"].tolist() == out["ids"].tolist()
