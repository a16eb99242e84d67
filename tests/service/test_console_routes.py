"""What the console reads besides the core API: the page itself, item images and thumbnails
(confined to their dataset, cached, with ETags), the embedding map, items filtered by label
and id prefix, and the raw-pixel baseline in the model list. Real bundles, real files."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from service.console import STATIC
from service.item_images import THUMB_DECODES, THUMB_SIZES, safe_id, thumbnail
from tests.conftest import CIFAR_SLICE
from tests.service.conftest import V1, V2
from trainer.embedding_map import MAP_FILE, ROWS_FILE
from trainer.images import decode_square

ITEM = "test/cat/0000.jpg"


@pytest.fixture()
def served(api):
    """The API with the models' dataset ("cifar-slice") on disk as a folder (wrapped in one
    top folder, as the zip is)."""
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        z.extractall(api.settings.data_root / "cifar-slice")
    return api


def test_the_console_page_and_its_files(api):
    r = api.client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert '<script type="module" src="/console/js/main.js">' in r.text
    js = api.client.get("/console/js/main.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    again = api.client.get("/console/js/main.js", headers={"If-None-Match": js.headers["etag"]})
    assert again.status_code == 304
    missing = api.client.get("/console/js/nope.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert {"/models/{version}/images/{item_id}", "/models/{version}/thumbnails/{item_id}",
            "/models/{version}/map"} <= set(paths)


def test_image_is_the_file_and_thumbnails_are_cached_with_etags(served):
    c = served.client
    original = (served.settings.data_root / "cifar-slice" / "cifar10" / ITEM).read_bytes()
    r = c.get(f"/models/{V1}/images/{ITEM}")
    assert r.status_code == 200 and r.content == original
    assert r.headers["content-type"] == "image/jpeg" and r.headers["etag"]
    # Shared caches revalidate: with a read key, the answer depends on Authorization.
    assert r.headers["cache-control"] == "no-cache"
    r = c.get(f"/models/{V1}/thumbnails/{ITEM}", params={"size": 16})
    assert r.status_code == 200 and r.headers["content-type"] in ("image/webp", "image/jpeg")
    assert r.headers["cache-control"] == "no-cache"
    assert Image.open(io.BytesIO(r.content)).size == (16, 16)
    big = c.get(f"/models/{V1}/thumbnails/{ITEM}", params={"size": 256})
    assert Image.open(io.BytesIO(big.content)).size == (32, 32)  # never enlarged
    assert big.headers["etag"] != r.headers["etag"]
    again = c.get(f"/models/{V1}/thumbnails/{ITEM}", params={"size": 16},
                  headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert c.app.state.thumbnails.bytes > 0
    # A file that changed gets a new ETag.
    path = served.settings.data_root / "cifar-slice" / "cifar10" / ITEM
    os.utime(path, ns=(1, 1))
    changed = c.get(f"/models/{V1}/thumbnails/{ITEM}", params={"size": 16},
                    headers={"If-None-Match": r.headers["etag"]})
    assert changed.status_code == 200 and changed.headers["etag"] != r.headers["etag"]
    for size in (100000, 24, 129, 512):  # a few fixed sizes, not one cache entry per pixel
        bad = c.get(f"/models/{V1}/thumbnails/{ITEM}", params={"size": size})
        assert bad.status_code == 422, size
    doc = c.get("/openapi.json").json()
    (size,) = [p for p in doc["paths"]["/models/{version}/thumbnails/{item_id}"]["get"][
        "parameters"] if p["name"] == "size"]
    schema = doc["components"]["schemas"][size["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert schema["enum"] == list(THUMB_SIZES)


@pytest.mark.parametrize("kind", ["16-bit", "float", "transparent"])
def test_thumbnails_show_deep_and_transparent_images_as_the_model_sees_them(kind):
    """A 16-bit PNG, a float TIFF with values in [0, 1] and a transparent PNG: Pillow's own
    conversion showed the first all white and the second all black, while the model embeds
    them rescaled. The thumbnail follows the model's rule (trainer.images.to_rgb)."""
    ramp = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (64, 1))
    out = io.BytesIO()
    if kind == "16-bit":
        Image.fromarray((ramp * 65535).astype(np.uint16)).save(out, "PNG")
    elif kind == "float":
        Image.fromarray(ramp, mode="F").save(out, "TIFF")
    else:
        rgba = np.zeros((64, 64, 4), np.uint8)
        rgba[..., 0], rgba[..., 3] = 200, (ramp * 255).astype(np.uint8)
        Image.fromarray(rgba).save(out, "PNG")
    data = out.getvalue()
    shown = np.asarray(Image.open(io.BytesIO(thumbnail(data, 64))).convert("RGB"), float)
    seen = decode_square(data, 64).astype(float)
    assert 60 < shown.mean() < 200  # neither blank white nor blank black
    assert abs(shown.mean() - seen.mean()) < 3
    assert shown[:, :8].mean() < shown[:, -8:].mean() - 50 or kind == "transparent"


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG"])
def test_a_large_image_shrunk_first_still_gets_an_upright_thumbnail(fmt):
    """2048 x 1024 stored landscape with orientation 6 (left half red, right half blue): the
    thumbnail, made before the image is turned upright, is a 32 x 64 portrait, red on top
    (a TIFF decoder turns its image upright itself)."""
    image = Image.new("RGB", (2048, 1024), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 1024, 1024))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, fmt, exif=exif)
    shown = Image.open(io.BytesIO(thumbnail(out.getvalue(), 64))).convert("RGB")
    assert shown.size == (32, 64)
    top, bottom = np.asarray(shown)[4, 16], np.asarray(shown)[60, 16]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60, (top, bottom)


def test_thumbnails_refuse_large_images(served):
    """A 30 MP PNG (a few kB on disk) is refused from its header, before it is decoded; a 30 MP
    JPEG photo is not."""
    c = served.client
    path = served.settings.data_root / "cifar-slice" / "cifar10" / ITEM
    big = io.BytesIO()
    Image.new("1", (6000, 5000)).save(big, "PNG")
    path.write_bytes(big.getvalue())
    r = c.get(f"/models/{V1}/thumbnails/{ITEM}")
    assert r.status_code == 422 and "MP" in r.json()["detail"], r.text
    # A JPEG of that size decodes at 1/8 of it for a thumbnail: a photo, not a bomb.
    photo = io.BytesIO()
    Image.new("RGB", (6000, 5000), (30, 90, 200)).save(photo, "JPEG")
    path.write_bytes(photo.getvalue())
    r = c.get(f"/models/{V1}/thumbnails/{ITEM}", params={"size": 128})
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (128, 107)


def test_thumbnails_decode_a_few_at_once(served, monkeypatch):
    """Concurrent thumbnails of different items decode at most THUMB_DECODES at once (each may
    take ~4 bytes a pixel)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from service.routes import images

    c = served.client
    active, most, lock = 0, 0, threading.Lock()
    real = images.thumbnail

    def counted(data: bytes, size: int) -> bytes:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.05)
        try:
            return real(data, size)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(images, "thumbnail", counted)
    ids = [f"train/cat/{i:04d}.jpg" for i in range(1, 17)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(
            lambda item: c.get(f"/models/{V1}/thumbnails/{item}").status_code, ids))
    assert answers == [200] * len(ids)
    assert 1 <= most <= THUMB_DECODES, most


def test_images_stay_inside_their_dataset(served, tmp_path):
    c = served.client
    # Dots percent-encoded: clients would resolve them before sending.
    for item in ("%2E%2E/%2E%2E/etc/passwd", "%2Fetc/passwd", "test/cat/%2E%2E/cat/0000.jpg",
                 "no/such/item.jpg"):
        r = c.get(f"/models/{V1}/images/{item}")
        assert r.status_code == 404, item
        assert r.headers["content-type"] == "application/problem+json"
    assert not safe_id("a/../b") and not safe_id("/a") and not safe_id("a//b")
    assert safe_id(ITEM)
    # An indexed item whose file became a symlink out of the dataset is not served.
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"not for you")
    target = served.settings.data_root / "cifar-slice" / "cifar10" / "test" / "cat" / "0001.jpg"
    target.unlink()
    target.symlink_to(outside)
    r = c.get(f"/models/{V1}/images/test/cat/0001.jpg")
    assert r.status_code == 404 and "not in dataset" in r.json()["detail"]
    assert c.get(f"/models/nope/images/{ITEM}").status_code == 404


def test_images_from_a_registered_zip_archive(api):
    root = api.settings.data_root
    (root / "imports").mkdir()
    shutil.copy(CIFAR_SLICE, root / "imports" / "slice.zip")
    (root / "cifar-slice").symlink_to("imports/slice.zip")
    r = api.client.get(f"/models/{V1}/images/{ITEM}")
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        assert r.status_code == 200 and r.content == z.read(f"cifar10/{ITEM}")
    assert api.client.get(f"/models/{V1}/thumbnails/{ITEM}").status_code == 200


def test_items_filtered_by_label_and_prefix(api):
    c = api.client
    everything = c.get(f"/models/{V1}/items", params={"limit": 1000}).json()
    assert everything["count"] == len(everything["data"]) == 120
    cats = c.get(f"/models/{V1}/items", params={"label": "cat", "limit": 1000}).json()
    assert cats["count"] == 30 and {i["label"] for i in cats["data"]} == {"cat"}
    test = c.get(f"/models/{V1}/items", params={"prefix": "test/", "limit": 1000}).json()
    assert test["count"] == 24 and all(i["id"].startswith("test/") for i in test["data"])
    both = c.get(f"/models/{V1}/items",
                 params={"prefix": "test/", "label": "cat", "offset": 2, "limit": 3}).json()
    assert both["count"] == 6
    assert [i["id"] for i in both["data"]] == [f"test/cat/000{n}.jpg" for n in (2, 3, 4)]
    order = [i["id"] for i in everything["data"]]
    assert [i["id"] for i in test["data"]] == [i for i in order if i.startswith("test/")]
    assert c.get(f"/models/{V1}/items", params={"prefix": "zzz"}).json()["count"] == 0
    # A label the model does not have is a filter that matches nothing, as the schema says.
    none = c.get(f"/models/{V1}/items", params={"label": "dog"})
    assert none.status_code == 200 and none.json()["count"] == 0 and none.json()["data"] == []
    for params in ({"prefix": "x" * 1025}, {"prefix": "a\x01b"},
                   {"label": ""}):
        r = c.get(f"/models/{V1}/items", params=params)
        assert r.status_code == 422, params
        assert r.headers["content-type"] == "application/problem+json"


def test_the_live_collection_lists_its_items_at_items(api):
    c = api.client
    for params in ({"limit": 1000}, {"prefix": "test/", "label": "cat", "offset": 2, "limit": 3}):
        r = c.get("/items", params=params)
        assert r.status_code == 200 and r.headers["X-Model-Version"] == V1
        assert r.json() == c.get(f"/models/{V1}/items", params=params).json()
    assert c.get("/items").json()["count"] == 120 and len(c.get("/items").json()["data"]) == 100
    pinned = c.get("/items", params={"model_version": V2, "limit": 1})
    assert pinned.status_code == 200 and pinned.json()["model_version"] == V2
    for params in ({"limit": 0}, {"prefix": "a\x01b"}, {"model_version": "../x"}):
        r = c.get("/items", params=params)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert c.get("/items", params={"model_version": "20990101-000000-none"}).status_code == 404


def test_map_of_a_model_and_of_one_published_without(api):
    c = api.client
    r = c.get(f"/models/{V1}/map")
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == body["item_count"] == 120 == len(body["ids"]) == len(body["x"])
    assert set(body["label"]) == {0, 1, 2, 3} and body["classes"][1] == "cat"
    assert min(body["x"] + body["y"]) >= 0 and max(body["x"] + body["y"]) <= 1
    assert c.get(f"/models/{V1}/map", headers={"If-None-Match": r.headers["etag"]}
                 ).status_code == 304
    bundle = api.settings.models_root / "20260102-000000-second"
    (bundle / MAP_FILE).unlink()
    (bundle / ROWS_FILE).unlink()
    r = c.get("/models/20260102-000000-second/map")
    assert r.status_code == 404 and "no embedding map" in r.json()["detail"]


def test_model_list_reports_the_pixel_baseline_and_recall(api):
    models = api.client.get("/models").json()["data"]
    manifest = json.loads((api.settings.models_root / V1 / "manifest.json").read_text())
    mine = next(m for m in models if m["version"] == V1)
    assert mine["pixel_knn_top1"] == manifest["metrics"]["pixel_knn_top1"]
    assert 0 <= mine["pixel_knn_top1"] <= 1
    assert mine["recall_at_10"] == manifest["index"]["recall_at_10"]
    assert manifest["map_points"] == 120


def test_model_list_gives_leave_one_out_and_label_free_figures(api):
    """A dataset with class folders and no test split is measured leave-one-out: its kNN figure
    is the model's headline as much as a test split's, beside raw pixels' (the list showed
    raw pixels' figure and none for the model); the label-free scores come with it."""
    path = api.settings.models_root / "20260102-000000-second" / "manifest.json"
    manifest = json.loads(path.read_text())
    metrics = {k: v for k, v in manifest["metrics"].items() if not k.startswith("knn_top")}
    manifest["metrics"] = metrics | {"loo_knn_top1": 0.5, "loo_knn_top5": 0.9,
                                     "knn_protocol": "leave-one-out", "pixel_knn_top1": 0.25,
                                     "label_free": 0.4, "pixel_label_free": 0.6}
    path.write_text(json.dumps(manifest))
    models = api.client.get("/models").json()["data"]
    mine = next(m for m in models if m["version"] == "20260102-000000-second")
    assert (mine["knn_top1"], mine["knn_protocol"], mine["pixel_knn_top1"]) == (
        0.5, "leave-one-out", 0.25)
    assert (mine["label_free"], mine["pixel_label_free"]) == (0.4, 0.6)
    test_split = next(m for m in models if m["version"] == V1)
    assert test_split["knn_protocol"] == "test" and test_split["knn_top1"] is not None


def test_images_and_map_need_the_read_key_when_one_is_set(tmp_path, models_template):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.service.conftest import make_settings

    settings = make_settings(tmp_path, models_template, read_api_key="read-key-0123456789abcd")
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        z.extractall(settings.data_root / "cifar-slice")
    with TestClient(create_app(settings, enqueue=lambda job_id: None)) as c:
        for path in (f"/models/{V1}/images/{ITEM}", f"/models/{V1}/thumbnails/{ITEM}",
                     f"/models/{V1}/map"):
            assert c.get(path).status_code == 401
            wrong = c.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 403
            ok = c.get(path, headers={"Authorization": "Bearer read-key-0123456789abcd"})
            assert ok.status_code == 200, path
        assert c.get("/").status_code == 200  # the page itself is open: it asks for the key


@pytest.mark.parametrize("path, bundle, vendor", [
    ("/docs", "swagger-ui-bundle.js", "swagger-ui"), ("/redoc", "redoc.standalone.js", "redoc")])
def test_api_docs_load_nothing_from_other_sites(api, path, bundle, vendor):
    """/docs (Swagger UI) and /redoc run on this origin (where keys are typed): their files come
    from this service, never from a CDN, and neither page loads a font from another site."""
    import re

    page = api.client.get(path)
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") and not s.startswith("//") for s in sources), sources
    assert "cdn" not in page.text.lower()
    for source in sources:
        r = api.client.get(source)
        assert r.status_code == 200, source
    assert any(s.endswith(bundle) for s in sources)
    assert "fonts.googleapis" not in page.text
    assert (STATIC / "vendor" / vendor / "LICENSE").is_file()
