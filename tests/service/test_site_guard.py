"""Without keys (development), other web sites may not use the API through a browser: no
cross-site writes, no Host but the allowed names (DNS rebinding)."""

from __future__ import annotations

import io
import zipfile

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.errors import PROBLEM
from service.site_guard import host_name
from tests.conftest import CIFAR_SLICE
from tests.service.conftest import V1, make_settings

LOCAL = "http://127.0.0.1:8000"


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def open_app(tmp_path_factory, models_template):
    """No key at all, and the default ALLOWED_HOSTS (loopback names)."""
    settings = make_settings(tmp_path_factory.mktemp("open"), models_template,
                             admin_api_key=None,
                             allowed_hosts="localhost 127.0.0.1 ::1")
    with zipfile.ZipFile(CIFAR_SLICE) as z:  # the bundles' dataset, as a folder
        z.extractall(settings.data_root / "cifar-slice")
    return create_app(settings, enqueue=lambda j: None)


def _forbidden(r, words: str) -> None:
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert words in r.json()["detail"], r.json()["detail"]


def test_cross_site_writes_are_refused_without_keys(open_app):
    with TestClient(open_app, base_url=LOCAL) as client:
        files = [("files", ("a.png", _png(), "image/png"))]
        # What a form on another site sends: multipart, no preflight.
        _forbidden(client.post("/items", files=files, data={"ids": "x.png"},
                               headers={"Origin": "https://evil.example",
                                        "Sec-Fetch-Site": "cross-site"}), "cross-site")
        _forbidden(client.post(f"/models/{V1}/promote",
                               headers={"Origin": "https://evil.example"}), "evil.example")
        _forbidden(client.post("/datasets", headers={"Sec-Fetch-Site": "same-site"},
                               files={"file": ("a.zip", b"zip", "application/zip")},
                               data={"name": "x"}), "same-site")
        _forbidden(client.delete("/items/x.png", headers={"Origin": "null"}), "null")
        # The console (same origin) and clients without these headers are served.
        same = {"Origin": LOCAL, "Sec-Fetch-Site": "same-origin"}
        r = client.post("/items", files=files, data={"ids": "x.png"}, headers=same)
        assert r.status_code == 201, r.text
        assert client.post(f"/models/{V1}/promote").status_code == 200
        assert client.delete("/items/x.png", headers={"Sec-Fetch-Site": "none"}
                             ).status_code == 200
        # Reads from another site are not writes (the browser keeps their answers from it).
        assert client.get("/models", headers={"Origin": "https://evil.example"}
                          ).status_code == 200


@pytest.mark.parametrize("base", ["http://evil.example:8000", "http://10.0.0.5:8000",
                                  "http://localhost.evil.example"])
def test_other_host_names_are_refused_without_keys(open_app, base):
    """DNS rebinding: the page's own name, now resolving to this machine, is in Host."""
    with TestClient(open_app, base_url=base) as client:
        _forbidden(client.get("/models"), "ALLOWED_HOSTS")
        _forbidden(client.get(f"/models/{V1}/images/train/cat/0000.jpg"), "ALLOWED_HOSTS")
        _forbidden(client.post(f"/models/{V1}/promote"), "ALLOWED_HOSTS")


@pytest.mark.parametrize("base", ["http://localhost:8000", LOCAL, "http://[::1]:8000",
                                  "http://LOCALHOST."])
def test_loopback_names_are_served_by_default(open_app, base):
    with TestClient(open_app, base_url=base) as client:
        assert client.get("/models").status_code == 200


def test_keys_are_the_guard_where_they_are_set(tmp_path, models_template):
    """With both keys set, Host and Origin are not checked: a browser attaches no bearer key to
    another site's request, and a deployment has its own names."""
    settings = make_settings(tmp_path, models_template, read_api_key="read-key-0123456789abc",
                             allowed_hosts="localhost")
    with TestClient(create_app(settings, enqueue=lambda j: None),
                    base_url="http://api.example.org") as client:
        assert client.get("/models").status_code == 401
        r = client.post(f"/models/{V1}/promote", headers={"Origin": "https://evil.example"})
        assert r.status_code == 401


def test_host_names():
    assert host_name("127.0.0.1:8000") == "127.0.0.1"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("LocalHost.") == "localhost"
    assert host_name("::1") == "::1"
