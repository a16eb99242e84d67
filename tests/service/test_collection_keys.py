"""A collection's own read key (in process, two real collections, both job-store backends): it
opens the read routes under /collections/{its name} and nothing else; a new one replaces the
old; removing it closes it at once, on every replica sharing the store; the global keys open
everything as before."""

from __future__ import annotations

import base64
import uuid
import zipfile

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from state.collection_keys import digest
from tests.conftest import CIFAR_SLICE
from tests.service.conftest import ADMIN, V1, make_settings

READ = "read-key-for-tests-0123456789"
ITEM = "train/cat/0000.jpg"
with zipfile.ZipFile(CIFAR_SLICE) as _z:
    CAT = base64.b64encode(_z.read("cifar10/test/cat/0001.jpg")).decode()



@pytest.fixture(params=["sqlite", "redis"])
def backend(request, tmp_path) -> dict:
    """Settings that put the job store (and so the keys) in SQLite or on the test Redis; the
    replicas of one test share it."""
    if request.param == "redis":
        return {"broker_url": request.getfixturevalue("redis_server").url,
                "key_prefix": f"keys-{uuid.uuid4().hex[:8]}:"}
    return {"state_root": tmp_path / "shared-state"}


def _replica(tmp_path, template, backend, name, **settings) -> TestClient:
    folder = tmp_path / name
    folder.mkdir()
    values = {"read_api_key": READ, "default_collection": "cifar-slice"} | backend | settings
    return TestClient(create_app(make_settings(folder, template, **values),
                                 enqueue=lambda j: None))


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _reads(c: TestClient, key: str, collection: str) -> list[int]:
    """The status of a few read routes under one collection."""
    prefix = f"/collections/{collection}"
    return [c.get(prefix, headers=_auth(key)).status_code,
            c.get(f"{prefix}/neighbours/{ITEM}", params={"k": 3},
                  headers=_auth(key)).status_code,
            c.post(f"{prefix}/search", json={"images": [CAT], "k": 2},
                   headers=_auth(key)).status_code,
            c.get(f"{prefix}/models", headers=_auth(key)).status_code]


def test_a_collection_key_opens_its_collection_only(tmp_path, two_collections, backend):
    with _replica(tmp_path, two_collections, backend, "one") as c:
        r = c.put("/collections/cifar-slice/key", headers=_auth(ADMIN))
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        key = r.json()["key"]
        assert r.json()["collection"] == "cifar-slice" and len(key) == 43
        stored = c.app.state.store.get_key_digest("cifar-slice")
        assert stored == digest(key) and key not in stored  # kept as its digest only

        assert _reads(c, key, "cifar-slice") == [200] * 4
        assert _reads(c, key, "other") == [403] * 4
        # The root routes serve cifar-slice here, and still a collection key does not open them.
        for url in (f"/neighbours/{ITEM}", "/collections", "/models", "/jobs", "/config"):
            assert c.get(url, headers=_auth(key)).status_code == 403, url
        # No admin power, even in its own collection.
        admin = [("POST", f"/collections/cifar-slice/models/{V1}/promote"),
                 ("PUT", "/collections/cifar-slice/key"),
                 ("DELETE", "/collections/cifar-slice/key"),
                 ("DELETE", f"/collections/cifar-slice/items/{ITEM}"),
                 ("POST", "/train")]
        for method, url in admin:
            assert c.request(method, url, headers=_auth(key)).status_code == 403, url
        # The global keys open everything as before.
        assert _reads(c, READ, "other") == [200] * 4
        assert c.get(f"/neighbours/{ITEM}", headers=_auth(READ)).status_code == 200
        assert c.get("/collections", headers=_auth(READ)).json()["count"] == 2


def test_a_new_key_replaces_the_old_and_delete_removes_it_on_every_replica(
        tmp_path, two_collections, backend):
    with (_replica(tmp_path, two_collections, backend, "one") as one,
          _replica(tmp_path, two_collections, backend, "two") as two):
        old = one.put("/collections/other/key", headers=_auth(ADMIN)).json()["key"]
        assert _reads(two, old, "other") == [200] * 4  # made on one replica, used on another
        new = two.put("/collections/other/key", headers=_auth(ADMIN)).json()["key"]
        assert new != old
        assert _reads(one, old, "other") == [403] * 4
        assert _reads(one, new, "other") == [200] * 4
        assert one.delete("/collections/other/key", headers=_auth(ADMIN)).status_code == 204
        assert _reads(two, new, "other") == [403] * 4
        r = two.delete("/collections/other/key", headers=_auth(ADMIN))
        assert r.status_code == 404 and "has no key" in r.json()["detail"]


def test_no_key_for_a_missing_collection_nor_while_reads_are_open(tmp_path, two_collections):
    with _replica(tmp_path, two_collections, {}, "keyed") as c:
        assert c.put("/collections/nowhere/key", headers=_auth(ADMIN)).status_code == 404
        assert c.delete("/collections/nowhere/key", headers=_auth(ADMIN)).status_code == 404
        assert c.put("/collections/.hidden/key", headers=_auth(ADMIN)).status_code == 422
    with _replica(tmp_path, two_collections, {}, "open", read_api_key=None) as c:
        r = c.put("/collections/other/key", headers=_auth(ADMIN))
        assert r.status_code == 409 and "READ_API_KEY" in r.json()["detail"]
