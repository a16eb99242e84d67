"""POST /items, DELETE /items and GET /items/{id}: the rules of a request, all or nothing."""

import base64
import io
import zipfile

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.errors import PROBLEM
from tests.conftest import CIFAR_SLICE
from tests.service.conftest import ADMIN, V1, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _png(colour=(200, 30, 30), size=(20, 20)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture()
def client(tmp_path, models_template):
    settings = make_settings(tmp_path, models_template)
    with zipfile.ZipFile(CIFAR_SLICE) as z:  # the bundles' dataset, as a folder
        z.extractall(settings.data_root / "cifar-slice")
    with TestClient(create_app(settings, enqueue=lambda j: None)) as c:
        c.settings = settings
        yield c


def _problem(r, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert words in r.json()["detail"], r.json()["detail"]


def test_add_in_every_form_then_find_get_and_delete(client):
    r = client.post("/items", headers=AUTH, json={"items": [
        {"id": "added/a.png", "image": base64.b64encode(_png()).decode(), "label": "cat"}]})
    assert r.status_code == 201, r.text
    assert r.json()["ids"] == ["added/a.png"] and r.json()["model_version"] == V1
    assert r.headers["location"] == "/items/added/a.png"
    r = client.post("/items", headers=AUTH, data={"ids": ["added/b.png", "added/c.png"],
                                                  "labels": ["ship", "brand-new"]},
                    files=[("files", ("b.png", _png((0, 0, 200)), "image/png")),
                           ("files", ("c.png", _png((0, 200, 0)), "image/png"))])
    assert r.status_code == 201, r.text
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("one.png", _png((10, 10, 10)))
        z.writestr("sub/two.png", _png((250, 250, 250)))
    r = client.post("/items", headers=AUTH, data={"prefix": "zip/", "label": "truck"},
                    files={"archive": ("a.zip", archive.getvalue(), "application/zip")})
    assert r.status_code == 201 and r.json()["ids"] == ["zip/one.png", "zip/sub/two.png"]
    # The answer says which version took the write and how far its collection got: this one.
    assert (r.headers["X-Model-Version"], r.headers["X-Changes-Seq"]) == (V1, "5")
    item = client.get("/items/added/c.png").json()
    assert item["label"] == "brand-new" and item["added_with"] == V1 and item["seq"] == 3
    base = client.get("/items/train/cat/0000.jpg").json()
    assert base["added_at"] is None and base["label"] == "cat"
    listed = client.get(f"/models/{V1}/items", params={"prefix": "zip/"}).json()
    assert [i["id"] for i in listed["data"]] == ["zip/one.png", "zip/sub/two.png"]
    assert client.get(f"/models/{V1}/items", params={"label": "brand-new"}).json()["count"] == 1
    # The labels to filter by: the bundle's classes, then the new ones in order of arrival.
    classes = client.get(f"/models/{V1}/items", params={"limit": 1}).json()["classes"]
    bundled = client.get(f"/models/{V1}").json()["classes"]
    assert classes == [*bundled, "brand-new"] and "truck" in bundled, classes
    assert client.get(f"/models/{V1}/images/zip/sub/two.png").content == _png((250, 250, 250))
    # A new class votes.
    r = client.post("/classify", files=[("files", ("q.png", _png((0, 200, 0)), "image/png"))],
                    data={"k": "1"})
    assert r.json()["predictions"][0]["label"] == "brand-new"
    assert client.delete("/items/added/c.png", headers=AUTH).status_code == 200
    assert client.get("/items/added/c.png").status_code == 404
    r = client.request("DELETE", "/items", headers=AUTH,
                       json={"ids": ["zip/one.png", "train/cat/0000.jpg"]})
    assert r.status_code == 200 and r.json()["seq"] == 8  # 5 adds, 1 delete, then these 2
    assert (r.headers["X-Model-Version"], r.headers["X-Changes-Seq"]) == (V1, "8")
    ids = {n["id"] for n in client.get("/neighbours/train/cat/0001.jpg",
                                       params={"k": 200}).json()["neighbours"]}
    assert {"added/a.png", "added/b.png", "zip/sub/two.png"} <= ids
    assert not ids & {"added/c.png", "zip/one.png", "train/cat/0000.jpg"}


def test_bad_requests_change_nothing(client):
    def count() -> int:
        return client.get(f"/models/{V1}/items").json()["count"]

    before = count()
    one = [("files", ("a.png", _png(), "image/png"))]
    _problem(client.delete("/items/nothing.png", headers=AUTH), 404, "no item")
    r = client.request("DELETE", "/items", headers=AUTH,
                       json={"ids": ["train/cat/0000.jpg", "nothing.png"]})
    _problem(r, 404, "nothing was deleted")
    assert client.get("/items/train/cat/0000.jpg").status_code == 200
    _problem(client.post("/items", headers=AUTH, files=one, data={"ids": "train/cat/0000.jpg"}),
             409, "already exists")
    for bad in ("../escape.png", "/etc/passwd", "a//b.png", "a/./b.png", "back\\slash.png"):
        r = client.post("/items", headers=AUTH, files=one, data={"ids": bad})
        assert r.status_code == 422, (bad, r.text)
    r = client.post("/items", headers=AUTH, json={"items": [
        {"id": "x/../../y.png", "image": base64.b64encode(_png()).decode()}]})
    assert r.status_code == 422
    twice = [("files", ("a.png", _png(), "image/png"))] * 2
    _problem(client.post("/items", headers=AUTH, files=twice, data={"ids": ["d.png", "d.png"]}),
             409, "appears twice")
    _problem(client.post("/items", headers=AUTH, files=twice, data={"ids": ["e.png"]}),
             422, "one `ids` field per file")
    # One corrupt image in an archive: the whole request is refused, named by its path.
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("good.png", _png())
        z.writestr("bad/broken.png", b"\x89PNG\r\n\x1a\n not really")
    r = client.post("/items", headers=AUTH, data={"prefix": "z/"},
                    files={"archive": ("a.zip", archive.getvalue(), "application/zip")})
    _problem(r, 422, "'z/bad/broken.png'")
    assert r.json()["title"] == "Invalid Image"
    assert r.json()["errors"] == [{"item": "z/bad/broken.png",
                                   "detail": r.json()["errors"][0]["detail"]}]
    # Several, in different chunks of the embedding (256 images each): all named in one
    # answer, so that a large archive need not be sent again once per bad file.
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(600):
            broken = i in (3, 300, 599)
            z.writestr(f"many/{i:03d}.png", b"\x89PNG not really" if broken else _png())
    r = client.post("/items", headers=AUTH, data={"prefix": "z/"},
                    files={"archive": ("a.zip", archive.getvalue(), "application/zip")})
    _problem(r, 422, "3 of the 600 images are not readable")
    body = r.json()
    assert "'z/many/003.png'" in body["detail"] and body["error_count"] == 3
    assert [e["item"] for e in body["errors"]] == ["z/many/003.png", "z/many/300.png",
                                                   "z/many/599.png"]
    assert all("not a readable image" in e["detail"] for e in body["errors"])
    _problem(client.post("/items", headers=AUTH, data={"prefix": "z/"},
                         files={"archive": ("a.zip", b"not a zip", "application/zip")}),
             422, "not a zip or tar")
    assert client.post("/items", files=one, data={"ids": "k.png"}).status_code == 401
    assert count() == before and client.get("/items/z/good.png").status_code == 404
    added = client.settings.data_root / "cifar-slice" / ".items"
    assert not added.exists() or list(added.iterdir()) == []  # refused requests leave no file


@pytest.fixture()
def proxied(tmp_path, models_template, redis_server):
    """The API with its change log on a real Redis reached through a proxy that can lose the
    reply to a transaction."""
    import uuid

    from state.changes_redis import RedisChangeLog
    from tests.redis_proxy import ExecReplyDroppingProxy

    proxy = ExecReplyDroppingProxy(redis_server.port)
    settings = make_settings(tmp_path, models_template)
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        z.extractall(settings.data_root / "cifar-slice")
    changes = RedisChangeLog(proxy.url, prefix=f"lost-{uuid.uuid4().hex[:8]}:")
    with TestClient(create_app(settings, enqueue=lambda j: None, changes=changes)) as c:
        c.settings, c.proxy = settings, proxy
        yield c
    proxy.close()


def test_a_lost_transaction_reply_neither_refuses_nor_loses_the_write(proxied):
    """Redis ran the append but its reply was lost: the retry finds the request's own entries
    and answers as for the first try; the images stay."""
    proxied.proxy.drop_next_exec()
    r = proxied.post("/items", headers=AUTH, data={"ids": ["lost/a.png", "lost/b.png"]},
                     files=[("files", ("a.png", _png((1, 2, 3)), "image/png")),
                            ("files", ("b.png", _png((4, 5, 6)), "image/png"))])
    assert proxied.proxy.dropped == 1
    assert r.status_code == 201, r.text
    assert r.json()["ids"] == ["lost/a.png", "lost/b.png"]
    assert [proxied.get(f"/items/lost/{n}.png").json()["seq"] for n in "ab"] == [1, 2]
    assert proxied.get(f"/models/{V1}/images/lost/b.png").content == _png((4, 5, 6))
    files = list((proxied.settings.data_root / "cifar-slice" / ".items").iterdir())
    assert len(files) == 2
    proxied.proxy.drop_next_exec()
    r = proxied.delete("/items/lost/a.png", headers=AUTH)
    assert proxied.proxy.dropped == 2
    assert r.status_code == 200, r.text
    assert r.json()["seq"] == 3
    assert proxied.get("/items/lost/a.png").status_code == 404
    assert proxied.get("/items/lost/b.png").status_code == 200


def test_a_change_sent_again_with_its_idempotency_key_answers_as_the_first_did(client):
    """A client whose reply was lost sends the same request again with the same key: the
    add (without upsert) and the deletes answer as before instead of 409 and 404, and nothing
    is changed twice; without a key, or with another one, the same request is refused."""
    files = [("files", ("a.png", _png((7, 8, 9)), "image/png"))]
    first = client.post("/items", headers=AUTH | {"Idempotency-Key": "add-1"},
                        data={"prefix": "again/"}, files=files)
    assert first.status_code == 201, first.text
    again = client.post("/items", headers=AUTH | {"Idempotency-Key": "add-1"},
                        data={"prefix": "again/"}, files=files)
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    _problem(client.post("/items", headers=AUTH | {"Idempotency-Key": "add-2"},
                         data={"prefix": "again/"}, files=files), 409, "already exists")
    _problem(client.post("/items", headers=AUTH, data={"prefix": "again/"}, files=files), 409,
             "already exists")
    assert client.get("/items/again/a.png").json()["seq"] == first.json()["seq"]
    for send in (lambda key: client.delete("/items/again/a.png", headers=AUTH | key),
                 lambda key: client.request("DELETE", "/items", headers=AUTH | key,
                                            json={"ids": ["again/a.png"]})):
        client.post("/items", headers=AUTH, data={"prefix": "again/"}, files=files,
                    params={"upsert": "true"})
        key = {"Idempotency-Key": f"delete-{id(send)}"}
        gone = send(key)
        assert gone.status_code == 200, gone.text
        assert send(key).json() == gone.json()
        _problem(send({}), 404, "no item")
    _problem(client.post("/items", headers=AUTH | {"Idempotency-Key": "not a key"},
                         data={"prefix": "again/"}, files=files), 422, "")


def _noise_png(seed: int, side: int) -> bytes:
    """A PNG of random pixels: it does not compress, so its size is about 3 x side^2."""
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return out.getvalue()


@pytest.fixture()
def strict(tmp_path, models_template):
    """Small archive limits: 50 KiB per image, 1 MiB per archive, one archive add at once."""
    settings = make_settings(tmp_path, models_template, max_image_mb=50 / 1024,
                             max_items_archive_mb=1, max_concurrent_archive_adds=1)
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        z.extractall(settings.data_root / "cifar-slice")
    with TestClient(create_app(settings, enqueue=lambda j: None)) as c:
        c.settings = settings
        yield c


def test_item_archives_have_entry_total_and_concurrency_limits(strict):
    def post(archive: bytes):
        return strict.post("/items", headers=AUTH, data={"prefix": "z/"},
                           files={"archive": ("a.zip", archive, "application/zip")})

    # One entry larger than an image may be (MAX_IMAGE_MB): refused, named.
    r = post(_zip({"small.png": _png(), "big.png": _noise_png(0, 160)}))  # 77 KB
    _problem(r, 413, "'big.png'")
    # Entries each small enough, together past MAX_ITEMS_ARCHIVE_MB (the zeros compress to
    # almost nothing: only the declared sizes tell).
    r = post(_zip({f"{i}.png": _png() + bytes(40_000) for i in range(30)}))
    _problem(r, 413, "MAX_ITEMS_ARCHIVE_MB")
    # Past the archive adds allowed at once: 503 with Retry-After.
    gate = strict.app.state.archive_adds
    assert gate.try_acquire()
    try:
        r = post(_zip({"one.png": _png()}))
        _problem(r, 503, "MAX_CONCURRENT_ARCHIVE_ADDS")
        assert int(r.headers["retry-after"]) >= 1
    finally:
        gate.release()
    assert post(_zip({"one.png": _png()})).status_code == 201
    added = strict.settings.data_root / "cifar-slice" / ".items"
    assert len(list(added.iterdir())) == 1


def test_an_archive_add_holds_its_images_on_disk_not_in_memory(client, monkeypatch):
    """An archive's images are read from disk a chunk at a time (here 1 MiB): from the moment
    the archive is unpacked to the answer, memory grows by about a chunk, not by the archive.
    (Measured from there: the test client and the form parser hold copies of the body.)"""
    import tracemalloc

    import service.routes.items as routes

    monkeypatch.setattr("service.items.CHUNK_BYTES", 1 << 20)
    unpack = routes._archive_items
    held: list[int] = []

    def measured(*args, **kwargs):
        tracemalloc.reset_peak()
        held.append(tracemalloc.get_traced_memory()[0])
        return unpack(*args, **kwargs)

    monkeypatch.setattr(routes, "_archive_items", measured)
    archive = _zip({f"n/{i:03}.png": _noise_png(i, 110) for i in range(200)})  # 36 KB each
    size = len(archive)
    assert size > 7_000_000
    tracemalloc.start()
    try:
        r = client.post("/items", headers=AUTH, data={"prefix": "mem/"},
                        files={"archive": ("a.zip", archive, "application/zip")})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 201, r.text
    assert len(r.json()["ids"]) == 200
    growth = peak - held[0]
    assert growth < 0.5 * size, (growth, size)


def test_every_multipart_route_takes_its_advertised_maximum(client):
    """MAX_IMAGES_PER_REQUEST files on every multipart route, with every field the route takes
    (on POST /items: one `ids` and one `labels` field per file, as the README shows)."""
    n = client.settings.max_images_per_request
    assert n == 64
    files = [("files", (f"{i}.png", _png((i, 2 * i, 3 * i)), "image/png")) for i in range(n)]
    r = client.post("/items", headers=AUTH, files=files,
                    data={"ids": [f"many/{i}.png" for i in range(n)],
                          "labels": [f"l{i % 3}" for i in range(n)]})
    assert r.status_code == 201, r.text
    assert len(r.json()["ids"]) == n
    for path, fields in (("/embed", {}), ("/search", {"k": "3"}),
                         ("/classify", {"k": "3", "sigma": "0.1"})):
        r = client.post(path, files=files, data=fields)
        assert r.status_code == 200, (path, r.text)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("cls/one.png", _png())
    r = client.post("/datasets", headers=AUTH, data={"name": "multi"},
                    files={"file": ("a.zip", archive.getvalue(), "application/zip")})
    assert r.status_code in (201, 422), r.text  # the form is read: the archive is judged


# Invisible or direction-changing characters, line separators, and a non-NFC spelling.
BAD_TEXT_IDS = ["a\u0085b.png", "a\u2028b.png", "a\u2029b.png", "evil\u202egnp.exe",
                "zero\u200bwidth.png", "bom\ufeff.png", "soft\u00adhyphen.png",
                "tag\U000e0041.png", "cafe\u0301.png", "\u212bngstrom.png"]


def test_ids_refuse_invisible_characters_and_non_nfc_forms(client):
    one = [("files", ("a.png", _png(), "image/png"))]
    for bad in BAD_TEXT_IDS:
        r = client.post("/items", headers=AUTH, files=one, data={"ids": bad})
        assert r.status_code == 422, (bad, r.text)
        r = client.post("/items", headers=AUTH, json={"items": [
            {"id": bad, "image": base64.b64encode(_png()).decode()}]})
        assert r.status_code == 422, (bad, r.text)
    r = client.post("/items", headers=AUTH, files=one, data={"ids": "caf\u00e9/\u00c5.png"})
    assert r.status_code == 201, r.text


def test_the_new_id_pattern_is_exactly_the_id_rule():
    """The OpenAPI pattern refuses exactly the characters of categories Cc, Cf, Zl and Zp
    (checked against this Python's Unicode data), besides '/', '\\' and empty, '.' or '..'
    parts; NFC is the code's own check. Lone surrogates (Cs) cannot come in UTF-8."""
    import re
    import sys
    import unicodedata

    from service.schemas import NEW_ITEM_ID

    pattern = re.compile(NEW_ITEM_ID)
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if char in "/\\." or unicodedata.category(char) == "Cs":
            continue
        refused = unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")
        assert (pattern.fullmatch(f"a{char}b") is None) == refused, hex(code)


def test_an_add_that_would_leave_too_little_disk_is_refused_and_stores_nothing(
        tmp_path, models_template):
    settings = make_settings(tmp_path, models_template, min_free_disk_mb=10**9)  # a petabyte
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        z.extractall(settings.data_root / "cifar-slice")
    with TestClient(create_app(settings, enqueue=lambda j: None)) as c:
        r = c.post("/items", headers=AUTH, data={"ids": "full/a.png"},
                   files=[("files", ("a.png", _png(), "image/png"))])
        _problem(r, 507, "MIN_FREE_DISK_MB")
        assert c.get("/items/full/a.png").status_code == 404
    added = settings.data_root / "cifar-slice" / ".items"
    assert not added.exists() or list(added.iterdir()) == []
