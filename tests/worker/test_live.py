"""What a job trains on and what it publishes when the collection changed, with a real SQLite
change log and real image files; and the compaction of the log when a job publishes, through a
real worker and the real API."""

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from live.collection import training_collection
from live.items import store_image
from live.publish import apply_to_embeddings
from service.app import create_app
from service.settings import ServiceSettings
from state.changes import ADD, DELETE, Change
from state.changes_sqlite import SqliteChangeLog
from state.jobs import QUEUED, RUNNING, Job
from state.settings import Settings
from state.store_sqlite import SqliteJobStore
from state.stores import open_changes
from tests.processes import wait_for
from tests.worker.conftest import TINY
from trainer.bundle import current_version
from trainer.data import open_collection
from worker.live import compaction_floor, take_snapshot


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
    snapshot = take_snapshot(run, log, "slice")
    seq = snapshot.seq
    assert seq == 2 and snapshot.added == {"added/red.png": red}
    base = open_collection(cifar_dir)
    assert len(base) == 120  # the scan never lists .items/
    snap = training_collection(base, log, "slice", cifar_dir, seq)
    assert len(snap) == 120 and "added/red.png" in snap.ids
    assert "train/ship/0000.jpg" not in snap.ids
    # Changes while the job trains: not in its snapshot, even when it resumes.
    blue = store_image(cifar_dir, _png((0, 0, 255)), ".png")
    log.append("slice", [Change(ADD, "added/blue.png", label="boat", path=blue),
                         Change(DELETE, "added/red.png")], known={})
    assert take_snapshot(run, log, "slice") == snapshot
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


def _small_folder(root) -> int:
    """A folder dataset of 40 random 8x8 PNGs in 4 classes (train/ and test/): jobs on it
    take seconds. Returns its size."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 8), ("test", 2)):
        for label in range(4):
            folder = root / split / str(label)
            folder.mkdir(parents=True)
            for n in range(per_class):
                pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
                Image.fromarray(pixels, "L").save(folder / f"{n:02d}.png")
    return 4 * (8 + 2)


def _items(client, version: str) -> dict[str, str | None]:
    r = client.get(f"/models/{version}/items", params={"limit": 10_000})
    assert r.status_code == 200, r.text
    return {i["id"]: i["label"] for i in r.json()["data"]}


def test_a_publish_compacts_the_log_and_removes_the_images_nobody_needs(redis_stack):
    """Items added, replaced and deleted through the API; the next job's publish drops the
    superseded entries and their images, and every replica, old or new, serves the same
    collection as before. (Both backends compact by the contract of tests/state.)"""
    stack = redis_stack
    s = stack.settings
    size = _small_folder(s.data_root / "small")
    stack.start_worker()
    config = {"rounds": 1, "epochs_per_round": 1, **TINY}
    first = stack.finished(stack.submit("small", **config).id)
    assert first.status == "succeeded", first.error
    items = s.data_root / "small" / ".items"
    changes = open_changes(s)

    def api():
        return TestClient(create_app(ServiceSettings(
            data_root=s.data_root, models_root=s.models_root, state_root=s.state_root,
            broker_url=s.broker_url, key_prefix=s.key_prefix, device="cpu",
            model_poll_s=0.2, allowed_hosts="testserver"),
            store=stack.store, enqueue=stack.enqueue))

    with api() as client:
        for n, name in enumerate(("a", "b", "c")):
            r = client.post("/items", files=[("files", (f"{name}.png", _png((n * 80, 0, 0)),
                                                       "image/png"))],
                            data={"prefix": "added/", "label": "7"})
            assert r.status_code == 201, r.text
        new_a = _png((0, 255, 0))
        r = client.post("/items", params={"upsert": "true"},
                        files=[("files", ("a.png", new_a, "image/png"))],
                        data={"prefix": "added/", "label": "3"})
        assert r.status_code == 201, r.text
        base = min(i for i in _items(client, first.model_version) if not i.startswith("added/"))
        for item in ("added/b.png", base):
            assert client.delete(f"/items/{item}").status_code == 200
        before = _items(client, first.model_version)
        assert before["added/a.png"] == "3" and "added/b.png" not in before
        assert base not in before and len(before) == size - 1 + 2
        assert len(changes.since("small", 0)) == changes.last_seq("small") == 6
        assert len(list(items.iterdir())) == 4
        superseded = {c.path for c in changes.since("small", 0) if c.seq in (1, 2)}
        assert all((s.data_root / "small" / p).is_file() for p in superseded)

        second = stack.finished(stack.submit("small", **config).id)
        assert second.status == "succeeded", second.error
        assert current_version(s.models_root) == second.model_version
        # The superseded entries (the first add of a, the add of b) are gone, the position
        # stays, and so do the images the remaining entries name; b's and a's first are not.
        assert [(c.op, c.id) for c in changes.since("small", 0)] == [
            ("add", "added/c.png"), ("add", "added/a.png"), ("delete", "added/b.png"),
            ("delete", base)]
        assert changes.last_seq("small") == 6
        kept = {c.path for c in changes.since("small", 0) if c.path}
        assert {f".items/{p.name}" for p in items.iterdir()} == kept and len(kept) == 2
        assert not any((s.data_root / "small" / p).exists() for p in superseded)
        wait_for(lambda: client.get("/neighbours/added/c.png").headers.get(
            "x-model-version") == second.model_version, 30, "the swap to the new version")
        assert _items(client, second.model_version) == before
        assert _items(client, first.model_version) == before  # the older version, caught up
        image = client.get(f"/models/{second.model_version}/images/added/a.png")
        assert image.status_code == 200 and image.content == new_a

    # A replica started now rebuilds both versions from their bundles and the compacted log.
    with api() as fresh:
        assert _items(fresh, second.model_version) == before
        assert _items(fresh, first.model_version) == before


def test_the_compaction_floor_keeps_the_snapshot_of_every_other_job(tmp_path):
    settings = Settings(data_root=tmp_path / "data", models_root=tmp_path / "models",
                        state_root=tmp_path / "state")
    settings.ensure_dirs()
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    log = SqliteChangeLog(tmp_path / "changes.sqlite3")

    def job(dataset: str, status: str, snapshot: bool) -> Job:
        made = store.create(Job.new(dataset, {}))
        if status == RUNNING:
            assert store.transition(made.id, {QUEUED}, RUNNING)
        if snapshot:
            run = settings.runs_root / made.id
            run.mkdir(parents=True)
            take_snapshot(run, log, dataset)
        return store.require(made.id)

    vector = np.ones(2, dtype=np.float32)
    log.append("d", [Change(ADD, "a", path=".items/a1.png", vector=vector)], known={})
    requeued = job("d", QUEUED, snapshot=True)  # resumes from its snapshot at 1
    log.append("d", [Change(ADD, "a", path=".items/a2.png", vector=vector),
                     Change(ADD, "b", path=".items/b.png", vector=vector)], known={},
               upsert=True)
    me = job("d", RUNNING, snapshot=True)
    job("d", QUEUED, snapshot=False)  # will take its snapshot after this publish
    job("other", RUNNING, snapshot=False)  # another dataset's log
    own = take_snapshot(settings.runs_root / me.id, log, "d")
    assert own.seq == 3 and own.added == {"a": ".items/a2.png", "b": ".items/b.png"}
    assert requeued.status == QUEUED
    floor, named = compaction_floor(settings, store, me, own)
    assert floor == 1 and named == {".items/a1.png", ".items/a2.png", ".items/b.png"}
    # A running job of the dataset that has not taken its snapshot yet: no compaction now.
    job("d", RUNNING, snapshot=False)
    assert compaction_floor(settings, store, me, own) is None
