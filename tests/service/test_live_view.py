"""A served bundle with the change log applied: own vectors used as they are, other models'
vectors replaced by the served model's, deletes hidden, every replica converging."""

import shutil
import zipfile

import numpy as np

from live.items import store_image
from service.live_view import LiveView
from state.changes import ADD, DELETE, Change
from state.changes_sqlite import SqliteChangeLog
from tests.conftest import CIFAR_SLICE
from tests.service.conftest import V1, V2
from trainer.bundle import Bundle


def test_views_apply_the_log_in_order_and_converge(tmp_path, models_template):
    models = tmp_path / "models"
    shutil.copytree(models_template, models)
    root = tmp_path / "data" / "cifar-slice"
    root.mkdir(parents=True)
    log = SqliteChangeLog(tmp_path / "jobs.sqlite3")
    v1 = Bundle.load(models, V1, device="cpu")
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        ship = z.read("cifar10/test/ship/0001.jpg")
        cat = z.read("cifar10/test/cat/0002.jpg")
    mine = v1.model.embed_files([ship])[0]
    ship_path = store_image(root, ship, ".jpg")
    cat_path = store_image(root, cat, ".jpg")
    a, b = LiveView(v1, log, root), LiveView(Bundle.load(models, V1, device="cpu"), log, root)
    log.append("cifar-slice", [
        Change(ADD, "new/ship.jpg", label="ship", path=ship_path, vector=mine, version=V1),
        # Embedded by another model: a V1 view must not use that vector.
        Change(ADD, "new/cat.jpg", label="cat", path=cat_path,
               vector=np.ones(128, dtype=np.float32) / np.sqrt(128), version=V2),
        Change(DELETE, "train/ship/0000.jpg"),
    ], known={"train/ship/0000.jpg": True})
    assert a.catch_up() == 3 and b.catch_up() == 3 and a.catch_up() == 3
    for view in (a, b):
        index = view.index
        assert "train/ship/0000.jpg" not in index and len(index) == 121
        assert np.array_equal(index.vector("new/ship.jpg"), mine)
        again = v1.model.embed_files([cat])[0]
        assert np.allclose(index.vector("new/cat.jpg"), again, atol=1e-6)
        hits = index.search(mine[None], 3)
        # The same picture is in the bundle too (test/ship/0001.jpg): both at similarity 1.
        assert set(hits.ids[0][:2]) == {"new/ship.jpg", "test/ship/0001.jpg"}
        assert np.allclose(hits.scores[0][:2], 1.0, atol=1e-4)
        assert "train/ship/0000.jpg" not in hits.ids[0]
        assert index.classes[index.label("new/cat.jpg")] == "cat"
    # A view built later (a restarted replica, or another version) sees the same collection.
    v2 = LiveView(Bundle.load(models, V2, device="cpu"), log, root)
    v2.catch_up()
    ids_a = {i for i, _ in a.index.items(0, 1000)[0]}
    assert {i for i, _ in v2.index.items(0, 1000)[0]} == ids_a
    assert np.allclose(v2.index.vector("new/ship.jpg"), v2.bundle.model.embed_files([ship])[0],
                       atol=1e-6)
