"""Every endpoint's happy path, against real bundles, a real SQLite job store and real images."""

import base64
import json
import shutil
import uuid
import zipfile

import numpy as np
import pytest

from service.routes.datasets import META
from state.jobs import Job
from tests.service.conftest import V1, V2
from trainer.bundle import Bundle
from trainer.label_free import MEASURE, MEASURE_BEFORE


def _image(cifar_zip, name="cifar10/test/cat/0001.jpg") -> bytes:
    with zipfile.ZipFile(cifar_zip) as z:
        return z.read(name)


def test_health_ready_metrics_config(api):
    c = api.client
    assert c.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = c.get("/readyz").json()
    assert ready["status"] == "ready" and ready["checks"]["model"] == V1
    c.get("/neighbours/train/cat/0000.jpg")
    text = c.get("/metrics").text
    assert 'and_model_info{collection="cifar-slice",version="' + V1 + '"} 1.0' in text
    assert 'and_collection_loaded_bytes{collection="cifar-slice"}' in text
    assert 'route="/neighbours/{item_id:path}"' in text and "and_jobs{" in text
    assert c.get("/config").json()["tau"]["default"] == 0.1


def test_upload_register_and_list_datasets(api, cifar_zip, cifar_dir):
    c = api.client
    with open(cifar_zip, "rb") as f:
        r = c.post("/datasets", data={"name": "slice"}, files={"file": ("s.zip", f)},
                   headers=api.admin)
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == "/datasets/slice"
    assert body["items"] == 120 and body["classes"] == ["airplane", "cat", "ship", "truck"]
    assert body["splits"] == {"train": 96, "test": 24} and body["labelled"]
    folder = api.settings.data_root / "shared-folder"
    shutil.copytree(cifar_dir / "train", folder / "imgs")
    r = c.post("/datasets", json={"name": "mine", "path": "shared-folder/imgs"},
               headers=api.admin)
    assert r.status_code == 201, r.text
    assert r.json()["items"] == 96
    listed = c.get("/datasets").json()
    assert listed["count"] >= 2 and {"slice", "mine"} <= {d["name"] for d in listed["data"]}
    assert c.get("/datasets/slice").json()["eval_items"] == 24
    # A registered folder changes under the service: its summary follows.
    cat = folder / "imgs" / "cat"
    shutil.copy(next(cat.iterdir()), cat / "added.jpg")
    assert c.get("/datasets/mine").json()["items"] == 97
    assert c.get("/datasets/slice").json()["ignored_files"] == 0  # the upload's own summary
    assert body["layout_note"] is None and c.get("/datasets/mine").json()["labelled"]
    # One image dropped beside the class folders: the folder reads as unlabelled, and says why.
    shutil.copy(cat / "added.jpg", folder / "imgs" / "loose.jpg")
    mine = c.get("/datasets/mine").json()
    assert not mine["labelled"] and mine["classes"] == [], mine
    assert "1 image(s) lie outside any folder (e.g. 'loose.jpg')" in mine["layout_note"]
    # A summary cached before datasets carried the note gets it on the next read.
    meta = api.settings.data_root / META / "mine.json"
    cached = json.loads(meta.read_text())
    del cached["summary"]["layout_note"]
    meta.write_text(json.dumps(cached))
    assert c.get("/datasets/mine").json()["layout_note"] == mine["layout_note"]
    assert json.loads(meta.read_text())["summary"]["layout_note"] == mine["layout_note"]


def test_train_status_list_progress_and_cancel(api, cifar_zip):
    c = api.client
    with open(cifar_zip, "rb") as f:
        c.post("/datasets", data={"name": "slice"}, files={"file": ("s.zip", f)},
               headers=api.admin)
    r = c.post("/train", json={"dataset": "slice", "config": {"backbone": "small_cnn",
                                                               "rounds": 2}},
               headers=api.admin)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued" and api.queued == [job["id"]]
    assert job["config"] == {"backbone": "small_cnn", "rounds": 2}
    got = c.get(f"/jobs/{job['id']}").json()
    assert got["id"] == job["id"] and got["error"] is None and got["model_version"] is None
    listed = c.get("/jobs", params={"limit": 10}).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == job["id"]
    assert c.get("/jobs", params={"status": "running"}).json()["count"] == 0
    assert c.get(f"/jobs/{job['id']}/progress").json() == {"id": job["id"], "epochs": []}
    r = c.delete(f"/jobs/{job['id']}", headers=api.admin)
    assert r.status_code == 202 and r.json()["status"] == "canceled"


def test_a_score_recorded_without_its_measure_is_answered_with_it(api):
    """Runs published before the label-free measure was recorded scored the reciprocal rank:
    every answer that carries such a score names that measure, so no reader needs the rule."""
    older = {"label_free": 0.3, "pixel_label_free": 0.4, "label_free_items": 50}
    now = older | {"label_free_measure": MEASURE}
    api.settings.models_root.joinpath(V2, "manifest.json").write_text(json.dumps(
        json.loads(api.settings.models_root.joinpath(V2, "manifest.json").read_text())
        | {"metrics": older | {"knn_top1": 0.5}}))
    store = api.client.app.state.store
    for progress, epochs in [({**older, "metrics": older}, [older, {"loss": 1.0}]),
                             ({**now, "metrics": now}, [now])]:
        job = store.create(Job(id=uuid.uuid4().hex, dataset="slice", config={},
                               progress=progress))
        for record in epochs:
            store.append_history(job.id, record)
        got = api.client.get(f"/jobs/{job.id}").json()["progress"]
        measure = progress["metrics"].get("label_free_measure", MEASURE_BEFORE)
        assert got["label_free_measure"] == got["metrics"]["label_free_measure"] == measure
        records = api.client.get(f"/jobs/{job.id}/progress").json()["epochs"]
        assert [r.get("label_free_measure") for r in records] == (
            [measure] * len(epochs) if measure == MEASURE else [MEASURE_BEFORE, None])
    metrics = api.client.get(f"/models/{V2}").json()["metrics"]
    assert metrics["label_free_measure"] == MEASURE_BEFORE and metrics["knn_top1"] == 0.5


def test_embed_multipart_and_base64_agree(api, cifar_zip):
    c = api.client
    img = _image(cifar_zip)
    r = c.post("/embed", files=[("files", ("a.jpg", img, "image/jpeg"))] * 3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == V1 and body["dim"] == 128 and len(body["embeddings"]) == 3
    assert r.headers["x-model-version"] == V1
    b64 = c.post("/embed", json={"images": [base64.b64encode(img).decode()]}).json()
    a, b = np.array(body["embeddings"][0]), np.array(b64["embeddings"][0])
    assert np.allclose(a, b, atol=1e-6) and abs(np.linalg.norm(a) - 1) < 1e-4
    # The served vector of an indexed file is the indexed vector.
    bundle = Bundle.load(api.settings.models_root, V1, device="cpu")
    indexed = bundle.vectors[bundle.row_of["test/cat/0001.jpg"]]
    assert float(a @ indexed) > 0.99


def test_neighbours_exclude_the_item_and_carry_labels(api):
    r = api.client.get("/neighbours/train/cat/0003.jpg", params={"k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "train/cat/0003.jpg" and body["model_version"] == V1
    ids = [n["id"] for n in body["neighbours"]]
    assert len(ids) == 5 and "train/cat/0003.jpg" not in ids
    scores = [n["score"] for n in body["neighbours"]]
    assert scores == sorted(scores, reverse=True) and all(-1.001 <= s <= 1.001 for s in scores)
    assert all(n["label"] in ("airplane", "cat", "ship", "truck") for n in body["neighbours"])
    big = api.client.get("/neighbours/train/cat/0003.jpg", params={"k": 1000}).json()
    assert len(big["neighbours"]) == 119  # every other item


def test_an_error_after_the_version_was_chosen_names_it(api):
    c = api.client
    for r in (c.get("/neighbours/no/such.jpg"),
              c.get("/neighbours/no/such.jpg", params={"model_version": V2}),
              c.post("/embed", files=[("files", ("a.png", b"not an image", "image/png"))]),
              c.post("/search", json={"vectors": [[1.0, 2.0]]})):
        assert r.status_code in (404, 422) and r.headers["content-type"] == (
            "application/problem+json"), r.text
        version = r.request.url.params.get("model_version", V1)
        assert r.headers["X-Model-Version"] == version and int(r.headers["X-Changes-Seq"]) >= 0
    # Refused before any version was chosen (or by a route with none): no version to name,
    # and none left over from the requests before.
    for r in (c.get("/neighbours/train/cat/0000.jpg", params={"k": 0}),
              c.get("/neighbours/x.jpg", params={"model_version": "20990101-000000-none"}),
              c.get("/jobs/nope")):
        assert r.status_code in (404, 422) and "X-Model-Version" not in r.headers, r.text


def test_search_by_vector_and_by_image(api, cifar_zip):
    c = api.client
    bundle = Bundle.load(api.settings.models_root, V1, device="cpu")
    vector = bundle.vectors[bundle.row_of["train/ship/0002.jpg"]] * 3.0  # length is ignored
    r = c.post("/search", json={"vectors": [vector.tolist()], "k": 3})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]["neighbours"][0]
    assert top["id"] == "train/ship/0002.jpg" and top["score"] == pytest.approx(1.0, abs=1e-4)
    img = _image(cifar_zip, "cifar10/train/ship/0002.jpg")
    r = c.post("/search", files=[("files", ("q.jpg", img, "image/jpeg"))], data={"k": "2"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["neighbours"][0]["id"] == "train/ship/0002.jpg"
    r = c.post("/search", json={"images": [base64.b64encode(img).decode()]})
    assert len(r.json()["results"][0]["neighbours"]) == 10


def test_classify_by_ids_and_images(api, cifar_zip):
    c = api.client
    r = c.post("/classify", json={"ids": ["test/cat/0001.jpg", "train/ship/0000.jpg"],
                                  "k": 20, "sigma": 0.1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == V1 and body["k"] == 20
    for p in body["predictions"]:
        assert set(p["scores"]) == {"airplane", "cat", "ship", "truck"}
        assert sum(p["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["label"] == max(p["scores"], key=p["scores"].get)
    assert [p["id"] for p in body["predictions"]] == ["test/cat/0001.jpg", "train/ship/0000.jpg"]
    img = _image(cifar_zip)
    r = c.post("/classify", files=[("files", ("q.jpg", img, "image/jpeg"))], data={"k": "5"})
    assert r.status_code == 200 and r.json()["k"] == 5
    default = c.post("/classify", json={"images": [base64.b64encode(img).decode()]}).json()
    assert default["k"] == 200 and default["sigma"] == 0.1


def test_models_list_get_promote_and_pin(api):
    c = api.client
    listed = c.get("/models").json()
    assert listed["current"] == V1 and [m["version"] for m in listed["data"]] == [V2, V1]
    manifest = c.get(f"/models/{V2}").json()
    assert manifest["item_count"] == 120 and manifest["current"] is False
    assert manifest["index"]["type"] == "flat" and "recall_at_10" in manifest["index"]
    pinned = c.get("/neighbours/train/cat/0000.jpg", params={"model_version": V2}).json()
    assert pinned["model_version"] == V2
    r = c.post(f"/models/{V2}/promote", headers=api.admin)
    assert r.status_code == 200 and r.json()["current"] is True
    assert c.get("/neighbours/train/cat/0000.jpg").json()["model_version"] == V2
    assert c.get("/readyz").json()["checks"]["model"] == V2
    # The version it replaced is remembered: one rollback brings it back, a second undoes it.
    listed = c.get("/models").json()
    assert (listed["current"], listed["previous"]) == (V2, V1)
    assert c.get(f"/models/{V1}").json()["previous"] is True
    assert c.post("/models/current/rollback").status_code == 401
    r = c.post("/models/current/rollback", headers=api.admin)
    assert r.status_code == 200 and r.json()["version"] == V1 and r.json()["current"] is True
    assert c.get("/neighbours/train/cat/0000.jpg").json()["model_version"] == V1
    assert (c.get("/models").json()["current"], c.get("/models").json()["previous"]) == (V1, V2)
    assert c.post("/models/current/rollback", headers=api.admin).json()["version"] == V2
