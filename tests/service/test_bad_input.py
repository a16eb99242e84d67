"""Bad input of every kind gets the right 4xx as application/problem+json, never a 500."""

import base64
import io
import shutil
import tarfile
import zipfile

import pytest

from service.errors import PROBLEM

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def _tar_with_link() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("imgs/evil.png")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    return buf.getvalue()


GOOD_ZIP = _zip({f"c{i % 2}/{i}.png": PNG_1PX for i in range(12)})
b64 = base64.b64encode(PNG_1PX).decode()

CASES = [
    # (id, method, path, kwargs, status)
    ("unknown route", "GET", "/nowhere", {}, 404),
    ("wrong method", "PUT", "/embed", {}, 405),
    ("unknown job", "GET", "/jobs/abc", {}, 404),
    ("cancel unknown job", "DELETE", "/jobs/abc", {"admin": True}, 404),
    ("bad job status filter", "GET", "/jobs?status=lost", {}, 422),
    ("negative offset", "GET", "/jobs?offset=-1", {}, 422),
    ("unknown dataset", "GET", "/datasets/none", {}, 404),
    ("unknown model", "GET", "/models/v999", {}, 404),
    ("promote unknown model", "POST", "/models/v999/promote", {"admin": True}, 404),
    ("rollback with no version before", "POST", "/models/current/rollback", {"admin": True}, 409),
    ("model path traversal", "GET", "/models/..%2F..%2Fetc", {}, 404),
    ("unknown item", "GET", "/neighbours/train/dog/9999.jpg", {}, 404),
    ("k zero", "GET", "/neighbours/train/cat/0000.jpg?k=0", {}, 422),
    ("huge k", "GET", "/neighbours/train/cat/0000.jpg?k=100000000", {}, 422),
    ("k not a number", "GET", "/neighbours/train/cat/0000.jpg?k=ten", {}, 422),
    ("unknown pinned version", "GET", "/neighbours/train/cat/0000.jpg?model_version=v0", {},
     404),
    ("embed: no content type", "POST", "/embed", {"content": b"abc"}, 415),
    ("embed: text body", "POST", "/embed",
     {"content": b"abc", "headers": {"content-type": "text/plain"}}, 415),
    ("embed: bad json", "POST", "/embed",
     {"content": b"{", "headers": {"content-type": "application/json"}}, 422),
    ("embed: empty batch", "POST", "/embed", {"json": {"images": []}}, 422),
    ("embed: unknown field", "POST", "/embed", {"json": {"images": [b64], "x": 1}}, 422),
    ("embed: not base64", "POST", "/embed", {"json": {"images": ["%%%"]}}, 422),
    ("embed: corrupt image", "POST", "/embed",
     {"files": [("files", ("a.png", b"\x89PNG\r\n\x1a\n broken", "image/png"))]}, 422),
    ("embed: truncated image", "POST", "/embed",
     {"files": [("files", ("a.png", PNG_1PX[:40], "image/png"))]}, 422),
    ("embed: multipart without files", "POST", "/embed", {"data": {"x": "1"},
                                                         "files": [("other", ("a", b"a"))]},
     422),
    ("embed: too many images", "POST", "/embed", {"json": {"images": [b64] * 65}}, 422),
    ("embed: oversized image", "POST", "/embed",
     {"files": [("files", ("a.png", b"0" * (11 * 1024 * 1024), "image/png"))]}, 413),
    ("search: wrong dimension", "POST", "/search", {"json": {"vectors": [[0.1, 0.2]]}}, 422),
    ("search: zero vector", "POST", "/search", {"json": {"vectors": [[0.0] * 128]}}, 422),
    ("search: both kinds", "POST", "/search",
     {"json": {"vectors": [[0.1] * 128], "images": [b64]}}, 422),
    ("search: neither kind", "POST", "/search", {"json": {"k": 3}}, 422),
    ("search: huge k", "POST", "/search", {"json": {"vectors": [[0.1] * 128], "k": 10**9}},
     422),
    ("search: k not a number (multipart)", "POST", "/search",
     {"files": [("files", ("a.png", PNG_1PX, "image/png"))], "data": {"k": "many"}}, 422),
    ("classify: unknown id", "POST", "/classify", {"json": {"ids": ["nope.jpg"]}}, 404),
    ("classify: sigma zero", "POST", "/classify",
     {"json": {"ids": ["train/cat/0000.jpg"], "sigma": 0}}, 422),
    ("classify: huge k", "POST", "/classify",
     {"json": {"ids": ["train/cat/0000.jpg"], "k": 10**7}}, 422),
    ("classify: empty ids", "POST", "/classify", {"json": {"ids": []}}, 422),
    ("train: unknown dataset", "POST", "/train", {"admin": True, "json": {"dataset": "none"}},
     404),
    ("train: unknown config key", "POST", "/train",
     {"admin": True, "json": {"dataset": "ok", "config": {"colour": 1}}}, 422),
    ("train: negative lr", "POST", "/train",
     {"admin": True, "json": {"dataset": "ok", "config": {"lr": -1}}}, 422),
    ("train: rounds zero", "POST", "/train",
     {"admin": True, "json": {"dataset": "ok", "config": {"rounds": 0}}}, 422),
    ("train: k >= N", "POST", "/train",
     {"admin": True, "json": {"dataset": "ok", "config": {"neighbours": 12}}}, 409),
    ("train: dataset escapes", "POST", "/train",
     {"admin": True, "json": {"dataset": "../models"}}, 422),
    ("train: extra field", "POST", "/train",
     {"admin": True, "json": {"dataset": "ok", "priority": 1}}, 422),
    ("train: not json", "POST", "/train",
     {"admin": True, "content": b"dataset=ok",
      "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415),
    ("upload: ../ entry", "POST", "/datasets",
     {"admin": True, "data": {"name": "evil"},
      "files": {"file": ("e.zip", _zip({"../escape.png": PNG_1PX, "a/1.png": PNG_1PX}))}},
     422),
    ("upload: absolute entry", "POST", "/datasets",
     {"admin": True, "data": {"name": "evil"},
      "files": {"file": ("e.zip", _zip({"/etc/x.png": PNG_1PX}))}}, 422),
    ("upload: link entry", "POST", "/datasets",
     {"admin": True, "data": {"name": "evil"}, "files": {"file": ("e.tar", _tar_with_link())}},
     422),
    ("upload: not an archive", "POST", "/datasets",
     {"admin": True, "data": {"name": "evil"}, "files": {"file": ("e.zip", b"hello")}}, 422),
    ("upload: no images", "POST", "/datasets",
     {"admin": True, "data": {"name": "evil"},
      "files": {"file": ("e.zip", _zip({"readme.txt": b"hi"}))}}, 422),
    ("upload: bad name", "POST", "/datasets",
     {"admin": True, "data": {"name": "../up"}, "files": {"file": ("e.zip", GOOD_ZIP)}}, 422),
    ("upload: name taken", "POST", "/datasets",
     {"admin": True, "data": {"name": "ok"}, "files": {"file": ("e.zip", GOOD_ZIP)}}, 409),
    ("upload: missing file", "POST", "/datasets",
     {"admin": True, "files": {"name": (None, "x")}}, 422),
    ("upload: form instead of multipart", "POST", "/datasets",
     {"admin": True, "data": {"name": "x"}}, 415),
    ("upload: oversized", "POST", "/datasets",
     {"admin": True, "data": {"name": "big"},
      "files": {"file": ("e.zip", b"0" * (3 * 1024 * 1024))}}, 413),
    ("register: outside data root", "POST", "/datasets",
     {"admin": True, "json": {"name": "x", "path": "../models"}}, 422),
    ("train without key", "POST", "/train", {"json": {"dataset": "ok"}}, 401),
    ("train with wrong key", "POST", "/train",
     {"json": {"dataset": "ok"}, "headers": {"Authorization": "Bearer wrong"}}, 403),
    ("promote without key", "POST", "/models/x/promote", {}, 401),
    ("upload without key", "POST", "/datasets", {"json": {"name": "x"}}, 401),
]


@pytest.fixture()
def small_upload_api(tmp_path, models_template):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.service.conftest import Api, make_settings

    settings = make_settings(tmp_path, models_template, max_upload_mb=2)
    app = create_app(settings, enqueue=lambda job_id: None)
    with TestClient(app) as client:
        api = Api(client, settings)
        r = client.post("/datasets", data={"name": "ok"}, files={"file": ("ok.zip", GOOD_ZIP)},
                        headers=api.admin)
        assert r.status_code == 201, r.text
        yield api


@pytest.mark.parametrize(("name", "method", "path", "kwargs", "status"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_4xx_problem(small_upload_api, name, method, path, kwargs, status):
    api = small_upload_api
    kwargs = dict(kwargs)
    headers = dict(kwargs.pop("headers", {}))
    if kwargs.pop("admin", False):
        headers |= api.admin
    r = api.client.request(method, path, headers=headers, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["title"]
    assert "Traceback" not in r.text and "File \"" not in r.text


def test_nothing_was_lost_by_bad_requests(small_upload_api):
    api = small_upload_api
    for _, method, path, kwargs, _ in CASES:
        kwargs = dict(kwargs)
        headers = dict(kwargs.pop("headers", {}))
        if kwargs.pop("admin", False):
            headers |= api.admin
        api.client.request(method, path, headers=headers, **kwargs)
    assert api.client.get("/datasets/ok").json()["items"] == 12
    assert not (api.settings.data_root / "evil").exists()
    assert [p.name for p in api.settings.data_root.iterdir() if p.name.startswith(".upload")] == []
    assert api.client.get("/readyz").status_code == 200


def test_model_without_labels_cannot_classify(tmp_path, models_template):
    import json

    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.service.conftest import V1, make_settings

    settings = make_settings(tmp_path, models_template)
    items = settings.models_root / V1 / "items.json"
    data = json.loads(items.read_text())
    data["labels"] = [-1] * len(data["labels"])
    items.write_text(json.dumps(data))
    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        r = client.post("/classify", json={"ids": ["train/cat/0000.jpg"]})
        assert r.status_code == 409 and "no labelled items" in r.json()["detail"]


def test_no_model_yet_is_503(tmp_path, models_template):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.service.conftest import make_settings

    settings = make_settings(tmp_path, models_template)
    shutil.rmtree(settings.models_root / "collections")  # published, none current
    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        for r in (client.get("/neighbours/a.jpg"), client.get("/readyz"),
                  client.post("/embed", json={"images": [b64]})):
            assert r.status_code == 503 and r.headers["content-type"].startswith(PROBLEM)


def test_an_unexpected_error_is_a_500_problem_that_tells_nothing(tmp_path, models_template):
    """A real failure inside a handler: a published bundle's manifest is damaged on disk."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.service.conftest import V2, make_settings

    settings = make_settings(tmp_path, models_template)
    (settings.models_root / V2 / "manifest.json").write_text('{"version": "' + V2)
    app = create_app(settings, enqueue=lambda j: None)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get(f"/models/{V2}")
    assert r.status_code == 500 and r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["title"] == "Internal Server Error" and body["instance"] == f"/models/{V2}"
    assert "Traceback" not in r.text and str(tmp_path) not in r.text
    assert "JSON" not in body["detail"] and "manifest" not in body["detail"]


def test_a_job_store_outage_is_503_with_retry_after(tmp_path, models_template):
    """The store cannot be reached (nothing listens on its port): the API says so and when to
    try again, rather than 500."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from state.store_redis import RedisJobStore
    from tests.processes import free_port
    from tests.service.conftest import ADMIN, make_settings

    store = RedisJobStore(f"redis://127.0.0.1:{free_port()}/0", prefix="outage:")
    settings = make_settings(tmp_path, models_template)
    with TestClient(create_app(settings, store=store, enqueue=lambda j: None)) as client:
        for method, path in (("GET", "/jobs"), ("GET", "/jobs/abc")):
            r = client.request(method, path, headers={"Authorization": f"Bearer {ADMIN}"})
            assert r.status_code == 503, (path, r.text)
            assert r.headers["content-type"].startswith(PROBLEM)
            assert int(r.headers["retry-after"]) >= 1
            assert "job store" in r.json()["detail"]


def test_imagenet_weights_that_cannot_be_fetched_are_a_409_naming_the_file(
        small_upload_api, tmp_path, monkeypatch):
    """Downloads allowed, but the address cannot be reached (as offline): refused at once,
    no job recorded, the problem says which file to place where."""
    import dataclasses

    from tests.imagenet_weights import stand_in
    from trainer import pretrained

    api = small_upload_api
    weights = stand_in(tmp_path / "w", monkeypatch, api.settings.data_root)
    name = weights.spec.file_name
    monkeypatch.setitem(pretrained.WEIGHTS, "resnet18", dataclasses.replace(
        weights.spec, url=(tmp_path / "unreachable" / name).as_uri()))
    body = {"dataset": "ok", "config": {"backbone": "resnet18", "image_size": 32,
                                        "init_from": "imagenet"}}
    r = api.client.post("/train", json=body, headers=api.admin)
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    problem = r.json()
    assert problem["title"] == "Pretrained Weights Not In Place"
    assert f"place it at DATA_ROOT/.pretrained/{name}" in problem["detail"]
    assert "torchvision ResNet18_Weights.IMAGENET1K_V1" in problem["detail"]
    assert api.client.get("/jobs", headers=api.admin).json()["count"] == 0
    # Placed there, the same request is accepted.
    weights.place()
    r = api.client.post("/train", json=body, headers=api.admin)
    assert r.status_code == 202, r.text


def test_a_wrong_imagenet_weights_file_is_refused_as_unusable_weights(
        small_upload_api, tmp_path, monkeypatch):
    from tests.imagenet_weights import stand_in, wrong_file

    api = small_upload_api
    weights = stand_in(tmp_path / "w", monkeypatch, api.settings.data_root)
    wrong_file(api.settings.data_root / ".pretrained" / weights.spec.file_name)
    body = {"dataset": "ok", "config": {"backbone": "resnet18", "image_size": 32,
                                        "init_from": "imagenet"}}
    r = api.client.post("/train", json=body, headers=api.admin)
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["title"] == "Unusable Initial Weights"
    assert "is not" in problem["detail"] and weights.spec.file_name in problem["detail"]
    assert api.client.get("/jobs", headers=api.admin).json()["count"] == 0
