"""Filtered /neighbours, /search and /classify through the real app: every form the README
shows (query parameters, a JSON `filter`, multipart `labels`/`prefix` fields), at the schema's
maximum of labels, with added and deleted items. The CIFAR slice: train/<class>/0000-0023.jpg
and test/<class>/0000-0005.jpg of airplane, cat, ship and truck."""

import base64
import io
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.errors import PROBLEM
from service.limits import FILTER_LABELS
from tests.conftest import CIFAR_SLICE
from tests.service.conftest import ADMIN, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN}"}
# The most labels a filter takes: one real class and the rest classes the model lacks.
MANY = ["ship"] + [f"no-such-class-{i}" for i in range(FILTER_LABELS - 1)]


@pytest.fixture()
def client(tmp_path, models_template):
    settings = make_settings(tmp_path, models_template)
    with zipfile.ZipFile(CIFAR_SLICE) as z:  # the bundles' dataset, as a folder (for adds)
        z.extractall(settings.data_root / "cifar-slice")
    with TestClient(create_app(settings, enqueue=lambda j: None)) as c:
        yield c


def _jpeg(path="cifar10/train/ship/0002.jpg") -> bytes:
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        return z.read(path)


def _png(colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (20, 20), colour).save(out, "PNG")
    return out.getvalue()


def _problem(r, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert words in r.json()["detail"], r.json()["detail"]


def _hits(r) -> list[tuple[str, str | None]]:
    assert r.status_code == 200, r.text
    body = r.json()
    found = body["neighbours"] if "neighbours" in body else body["results"][0]["neighbours"]
    return [(n["id"], n["label"]) for n in found]


def test_neighbours_take_the_filter_as_query_parameters(client):
    item = "/neighbours/train/cat/0003.jpg"
    hits = _hits(client.get(item, params={"labels": "ship", "k": 5}))
    assert len(hits) == 5 and {lab for _, lab in hits} == {"ship"}
    # Several labels (any of them) and a prefix: 6 test cats + 6 test ships match.
    both = {"labels": ["cat", "ship"], "prefix": "test/"}
    hits = _hits(client.get(item, params=both | {"k": 12}))
    assert len(hits) == 12 and all(i.startswith("test/") and lab in ("cat", "ship")
                                   for i, lab in hits)
    assert len(_hits(client.get(item, params=both | {"k": 50}))) == 12
    # The item itself never answers, even when only it and its class match.
    hits = _hits(client.get(item, params={"prefix": "train/cat/", "k": 50}))
    assert len(hits) == 23 and item[12:] not in {i for i, _ in hits}
    assert _hits(client.get(item, params={"labels": "nope"})) == []
    # At the schema's maximum of labels; one more, an empty one or a control character: 422.
    hits = _hits(client.get(item, params={"labels": MANY, "k": 50}))
    assert len(hits) == 30 and {lab for _, lab in hits} == {"ship"}
    _problem(client.get(item, params={"labels": [*MANY, "cat"]}), 422, "labels")
    _problem(client.get(item, params={"labels": ""}), 422, "labels")
    _problem(client.get(item, params={"prefix": "train/\x01"}), 422, "prefix")


def test_search_takes_the_filter_in_json_and_in_multipart(client):
    img = _jpeg()
    b64 = base64.b64encode(img).decode()
    r = client.post("/search", json={"images": [b64], "k": 7,
                                     "filter": {"labels": ["truck"], "prefix": "train/"}})
    hits = _hits(r)
    assert len(hits) == 7 and all(i.startswith("train/truck/") for i, _ in hits)
    vector = client.post("/embed", json={"images": [b64]}).json()["embeddings"][0]
    r = client.post("/search", json={"vectors": [vector, vector], "k": 30,
                                     "filter": {"labels": MANY}})
    assert r.status_code == 200, r.text
    assert [len(res["neighbours"]) for res in r.json()["results"]] == [30, 30]
    assert _hits(client.post("/search", json={"vectors": [vector],
                                              "filter": {"prefix": "nothing/"}})) == []
    files = [("files", ("q.jpg", img, "image/jpeg"))]
    r = client.post("/search", files=files,
                    data={"labels": ["airplane", "cat"], "prefix": "test/", "k": "20"})
    hits = _hits(r)
    assert len(hits) == 12 and all(i.startswith(("test/airplane/", "test/cat/"))
                                   for i, _ in hits)
    r = client.post("/search", files=files, data={"labels": MANY, "k": "50"})
    assert len(_hits(r)) == 30 and {lab for _, lab in _hits(r)} == {"ship"}
    _problem(client.post("/search", files=files, data={"labels": [*MANY, "cat"]}), 422,
             "labels")
    _problem(client.post("/search", files=files, data={"prefix": "a\x7f"}), 422, "prefix")
    _problem(client.post("/search", json={"vectors": [vector],
                                          "filter": {"labels": [*MANY, "cat"]}}), 422, "labels")
    _problem(client.post("/search", json={"vectors": [vector], "filter": {"label": "cat"}}),
             422, "filter.label")
    _problem(client.post("/search", json={"vectors": [vector], "filter": {"labels": []}}),
             422, "filter.labels")


def test_classify_votes_only_with_items_that_match(client):
    r = client.post("/classify", json={"ids": ["test/cat/0001.jpg", "test/truck/0000.jpg"],
                                       "k": 20, "filter": {"labels": ["cat", "ship"]}})
    assert r.status_code == 200, r.text
    for p in r.json()["predictions"]:
        assert p["label"] in ("cat", "ship")
        assert p["scores"]["airplane"] == p["scores"]["truck"] == 0
        assert sum(p["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    files = [("files", ("q.jpg", _jpeg(), "image/jpeg"))]
    r = client.post("/classify", files=files, data={"labels": ["truck"], "k": "5"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["scores"]["truck"] == pytest.approx(1.0)
    r = client.post("/classify", files=files, data={"labels": MANY, "prefix": "test/"})
    assert r.json()["predictions"][0]["label"] == "ship"
    _problem(client.post("/classify", json={"ids": ["test/cat/0001.jpg"],
                                            "filter": {"labels": ["nope"]}}), 409, "filter")
    _problem(client.post("/classify", files=files, data={"prefix": "nothing/"}), 409, "filter")


def test_the_filter_sees_added_items_and_never_deleted_ones(client):
    r = client.post("/items", headers=AUTH, json={"items": [
        {"id": "added/zebra.png", "image": base64.b64encode(_png((9, 9, 9))).decode(),
         "label": "zebra"},
        {"id": "added/ship.png", "image": base64.b64encode(_png((0, 0, 200))).decode(),
         "label": "ship"}]})
    assert r.status_code == 201, r.text
    item = "/neighbours/test/ship/0000.jpg"
    assert _hits(client.get(item, params={"labels": "zebra"})) == [("added/zebra.png", "zebra")]
    hits = _hits(client.get(item, params={"prefix": "added/", "k": 5}))
    assert sorted(hits) == [("added/ship.png", "ship"), ("added/zebra.png", "zebra")]
    gone = [f"train/ship/{i:04d}.jpg" for i in range(4)] + ["added/zebra.png"]
    r = client.request("DELETE", "/items", headers=AUTH, json={"ids": gone})
    assert r.status_code == 200, r.text
    hits = _hits(client.get(item, params={"labels": "ship", "k": 100}))
    # 24 train + 6 test + 1 added ships, less 4 deleted and the item itself.
    assert len(hits) == 26 and not {i for i, _ in hits} & set(gone)
    assert _hits(client.get(item, params={"labels": "zebra"})) == []
    vector = np.ones(1)  # any direction: the filter alone decides what may answer
    dim = len(client.post("/embed", json={"images": [base64.b64encode(_jpeg()).decode()]})
              .json()["embeddings"][0])
    r = client.post("/search", json={"vectors": [(vector.repeat(dim)).tolist()], "k": 100,
                                     "filter": {"labels": ["ship"], "prefix": "train/ship/"}})
    assert {i for i, _ in _hits(r)} == {f"train/ship/{i:04d}.jpg" for i in range(4, 24)}
