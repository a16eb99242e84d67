"""Near-duplicates through the real app, on the session's real bundle (V1) of the CIFAR slice:
the pairs of GET /models/{version}/duplicates checked against every pair computed here, and
POST /items listing (or refusing) images that duplicate existing items, in every form, at the
form's maximum of files, with an Idempotency-Key replay."""

from __future__ import annotations

import base64
import io
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.errors import PROBLEM
from service.limits import DUPLICATE_THRESHOLD_MIN
from tests.conftest import CIFAR_SLICE
from tests.service.conftest import ADMIN, V1, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture()
def client(tmp_path, models_template):
    # The session's models trained one epoch: distinct images are often closer than 0.99, so
    # only copies (the same image sent again) pass this threshold.
    settings = make_settings(tmp_path, models_template, duplicate_threshold=0.9999)
    with zipfile.ZipFile(CIFAR_SLICE) as z:  # the bundle's dataset, as a folder
        z.extractall(settings.data_root / "cifar-slice")
    with TestClient(create_app(settings, enqueue=lambda j: None)) as c:
        c.settings = settings
        yield c


def _image(name: str) -> bytes:
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        return z.read(f"cifar10/{name}")


def _noise(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def _all_pairs(client, threshold: float) -> set[tuple[str, str]]:
    """Every pair of live items at or above `threshold`, by comparing every pair."""
    collections = client.app.state.collections
    served = collections.registry(collections.resolve(None)).peek(V1)
    assert served is not None
    index = served.live.index
    ids = [i for i, _ in index.items(limit=10_000)[0]]
    x = np.stack([index.vector(i) for i in ids]).astype(np.float64)
    sims = x @ x.T
    first, second = np.nonzero(np.triu(sims, 1) >= threshold)
    return {tuple(sorted((ids[a], ids[b]))) for a, b in zip(first, second, strict=True)}


def test_pairs_listed_once_most_similar_first_with_adds_and_deletes(client):
    copy = _image("train/cat/0000.jpg")
    r = client.post("/items", headers=AUTH, data={"ids": ["copies/cat.jpg"]},
                    files=[("files", ("cat.jpg", copy, "image/jpeg"))])
    assert r.status_code == 201, r.text
    answer = r.json()
    assert answer["duplicate_threshold"] == client.settings.duplicate_threshold
    [listed] = [d for d in answer["duplicates"] if d["id"] == "copies/cat.jpg"]
    assert listed["duplicates"][0]["id"] == "train/cat/0000.jpg"
    assert listed["duplicates"][0]["cosine"] == pytest.approx(1.0, abs=1e-4)

    r = client.get(f"/models/{V1}/duplicates", params={"threshold": 0.999, "limit": 1000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == V1 and body["items"] == 121 and body["threshold"] == 0.999
    pairs = [(p["a"]["id"], p["b"]["id"], p["cosine"]) for p in body["pairs"]]
    cosines = [c for _, _, c in pairs]
    assert cosines == sorted(cosines, reverse=True) and min(cosines, default=1) >= 0.999
    found = {tuple(sorted((a, b))) for a, b, _ in pairs}
    assert len(found) == len(pairs) == body["total"]  # each pair once
    assert ("copies/cat.jpg", "train/cat/0000.jpg") in found
    if body["crowded"] == 0:  # no item lost a pair to the neighbours asked for
        assert found == _all_pairs(client, 0.999)
    else:
        assert found <= _all_pairs(client, 0.999)
    first = body["pairs"][0]
    assert first["a"]["image"].startswith(f"/models/{V1}/images/")
    assert client.get(first["a"]["image"]).status_code == 200

    # A page, a stricter cut of the same kept pairs.
    page = client.get(f"/models/{V1}/duplicates", params={"threshold": 0.999, "limit": 1,
                                                          "offset": 0}).json()
    assert page["total"] == body["total"] and page["pairs"] == body["pairs"][:1]

    assert client.request("DELETE", "/items", headers=AUTH,
                          json={"ids": ["copies/cat.jpg"]}).status_code == 200
    after = client.get(f"/models/{V1}/duplicates", params={"threshold": 0.999}).json()
    assert after["items"] == 120 and after["seq"] > body["seq"]
    assert all("copies/cat.jpg" not in (p["a"]["id"], p["b"]["id"]) for p in after["pairs"])


def test_bad_listing_requests_are_problems(client):
    for params in ({"threshold": DUPLICATE_THRESHOLD_MIN - 0.01}, {"threshold": 1.5},
                   {"limit": 0}, {"limit": 1001}, {"offset": -1}, {"threshold": "x"}):
        r = client.get(f"/models/{V1}/duplicates", params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
    assert client.get("/models/20990101-000000-none/duplicates").status_code == 404


def test_refuse_at_the_forms_maximum_adds_nothing_and_names_the_duplicates(client):
    n = client.settings.max_images_per_request
    files = [("files", (f"n{i}.png", _noise(i), "image/png")) for i in range(n - 1)]
    files.append(("files", ("plane.jpg", _image("train/airplane/0001.jpg"), "image/jpeg")))
    ids = [f"batch/n{i}.png" for i in range(n - 1)] + ["batch/plane.jpg"]
    r = client.post("/items", headers=AUTH, params={"if_duplicate": "refuse"},
                    data={"ids": ids}, files=files)
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    problem = r.json()
    assert "'batch/plane.jpg'" in problem["detail"] and "nothing was added" in problem["detail"]
    named = {e["loc"][1]: e["duplicates"] for e in problem["errors"]}
    assert named["batch/plane.jpg"][0]["id"] == "train/airplane/0001.jpg"
    assert problem["error_count"] == len(named)
    assert client.get("/items/batch/n0.png").status_code == 404  # all or nothing

    # Without the duplicating images the rest goes in; the same request sent again with its
    # Idempotency-Key answers as the first did (its own items are not its duplicates).
    kept = [(f, i) for f, i in zip(files, ids, strict=True) if i not in named]
    key = {"Idempotency-Key": "dup-test-0001"}
    sent = {"params": {"if_duplicate": "refuse"}, "data": {"ids": [i for _, i in kept]},
            "files": [f for f, _ in kept]}
    first = client.post("/items", headers=AUTH | key, **sent)
    assert first.status_code == 201, first.text
    again = client.post("/items", headers=AUTH | key, **sent)
    assert again.status_code == 201, again.text
    assert again.json()["ids"] == first.json()["ids"] and again.json()["seq"] == first.json()["seq"]


def test_json_and_archive_adds_list_duplicates_too(client):
    cat = _image("train/cat/0001.jpg")
    r = client.post("/items", headers=AUTH, json={"items": [
        {"id": "json/cat.jpg", "image": base64.b64encode(cat).decode()}]})
    assert r.status_code == 201, r.text
    assert r.json()["duplicates"][0]["duplicates"][0]["id"] == "train/cat/0001.jpg"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ship.jpg", _image("train/ship/0002.jpg"))
    r = client.post("/items", headers=AUTH, params={"if_duplicate": "refuse"},
                    data={"prefix": "zip/"},
                    files={"archive": ("a.zip", archive.getvalue(), "application/zip")})
    assert r.status_code == 409, r.text
    assert r.json()["errors"][0]["duplicates"][0]["id"] == "train/ship/0002.jpg"
