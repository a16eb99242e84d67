import logging
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from service.app import UnsafeSettings, create_app
from service.errors import PROBLEM
from tests.service.conftest import ADMIN, make_settings
from tests.worker.conftest import write_tiny_dataset

READ = "read-key-for-tests-0123456789"


@pytest.fixture()
def keyed(tmp_path, models_template):
    settings = make_settings(tmp_path, models_template, read_api_key=READ)
    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        yield client


def test_read_key_guards_read_routes(keyed):
    r = keyed.get("/models")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"].startswith(PROBLEM)
    assert keyed.get("/models", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert keyed.get("/models", headers={"Authorization": f"Bearer {READ}"}).status_code == 200
    assert keyed.get("/models", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    assert keyed.get("/models", headers={"Authorization": "Basic abc"}).status_code == 401
    # Liveness and readiness stay open for orchestrators.
    assert keyed.get("/healthz").status_code == 200


def test_read_key_cannot_mutate(tmp_path, models_template):
    """Refused, and nothing done: no job queued or recorded. The same request with the admin
    key is queued, so the refusal was the key's alone."""
    settings = make_settings(tmp_path, models_template, read_api_key=READ)
    dataset = write_tiny_dataset(settings.data_root)
    queued: list[str] = []
    body = {"dataset": dataset, "config": {"backbone": "small_cnn", "image_size": 16}}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(create_app(settings, enqueue=queued.append)) as client:
        r = client.post("/train", json=body, headers={"Authorization": f"Bearer {READ}"})
        assert r.status_code == 403, r.text
        assert queued == []
        assert client.get("/jobs", headers=admin).json()["count"] == 0
        r = client.post("/train", json=body, headers=admin)
        assert r.status_code == 202, r.text
        assert queued == [r.json()["id"]]


@pytest.mark.parametrize("key", [None, "changeme", "short"])
def test_production_refuses_placeholder_keys(tmp_path, models_template, key):
    settings = make_settings(tmp_path, models_template, environment="production",
                             admin_api_key=key)
    with pytest.raises(UnsafeSettings, match="ADMIN_API_KEY"):
        create_app(settings)


def test_production_starts_with_real_keys(tmp_path, models_template, caplog):
    settings = make_settings(tmp_path, models_template, environment="production",
                             read_api_key=READ)
    with caplog.at_level(logging.INFO, logger="service.app"), TestClient(
            create_app(settings, enqueue=lambda j: None)) as client:
        assert client.post("/train", json={"dataset": "x"}).status_code == 401
        assert client.get("/models").status_code == 401
    assert "read routes need READ_API_KEY" in caplog.text


def test_production_without_a_read_key_needs_open_reads_chosen(tmp_path, models_template,
                                                               caplog):
    """An admin key alone once served every dataset image to anyone in production."""
    settings = make_settings(tmp_path / "a", models_template, environment="production")
    with pytest.raises(UnsafeSettings, match=r"READ_API_KEY is not set.*ALLOW_OPEN_READS"):
        create_app(settings)
    settings = make_settings(tmp_path / "b", models_template, environment="production",
                             allow_open_reads=True)
    with caplog.at_level(logging.WARNING, logger="service.app"), TestClient(
            create_app(settings, enqueue=lambda j: None)) as client:
        assert client.get("/models").status_code == 200
        assert client.post("/train", json={"dataset": "x"}).status_code == 401
    assert "read routes are open to anyone (ALLOW_OPEN_READS" in caplog.text


def test_the_command_refuses_to_start_unsafely(tmp_path):
    env = {"ENVIRONMENT": "production", "ADMIN_API_KEY": "changeme",
           "DATA_ROOT": str(tmp_path / "d"), "MODELS_ROOT": str(tmp_path / "m"),
           "STATE_ROOT": str(tmp_path / "s"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "service", "--port", "0"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "ADMIN_API_KEY" in r.stderr


def test_streamed_oversized_upload_is_cut_off(tmp_path, models_template):
    settings = make_settings(tmp_path, models_template, max_upload_mb=1)
    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        boundary = "xyz"

        def body():
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nbig\r\n"
                   f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                   "filename=\"a.zip\"\r\n\r\n").encode()
            for _ in range(40):
                yield b"0" * 65536
            yield f"\r\n--{boundary}--\r\n".encode()

        r = client.post("/datasets", content=body(), headers={
            "content-type": f"multipart/form-data; boundary={boundary}",
            "Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 413 and r.headers["content-type"].startswith(PROBLEM)
        assert not (settings.data_root / "big").exists()
