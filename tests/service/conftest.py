from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from tests.conftest import V1 as V1  # re-exported: the service tests import them from here
from tests.conftest import V2 as V2
from trainer.bundle import set_current, write_bundle

ADMIN = "admin-key-for-tests-0123456789"
TEST_HOSTS = "testserver localhost 127.0.0.1 ::1"


@pytest.fixture(scope="session")
def models_template(tmp_path_factory, trained_runs) -> Path:
    """Two real bundles, V1 and V2 (different seeds); V1 is current."""
    root = tmp_path_factory.mktemp("models")
    for version, run in trained_runs.items():
        write_bundle(run, root, dataset="cifar-slice", version=version, extra={"job_id": None})
    set_current(root, V1)
    return root


@dataclass
class Api:
    client: TestClient
    settings: ServiceSettings
    queued: list[str] = field(default_factory=list)

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN}"}


def make_settings(tmp_path: Path, models_template: Path, **overrides) -> ServiceSettings:
    models = tmp_path / "models"
    shutil.copytree(models_template, models)
    data = tmp_path / "data"
    data.mkdir()
    values = {"data_root": data, "models_root": models, "state_root": tmp_path / "state",
              "admin_api_key": ADMIN, "device": "cpu", "model_poll_s": 0.2,
              # TestClient's host name, besides the loopback names schemathesis uses.
              "allowed_hosts": TEST_HOSTS} | overrides
    return ServiceSettings(**values)



OTHER = "20260103-000000-other"  # V2's run published as a model of dataset "other"


@pytest.fixture(scope="module")
def two_collections(tmp_path_factory, models_template, trained_runs) -> Path:
    """The template's models plus a second collection, "other", serving OTHER (a tree per
    module: tests promote and roll back in it)."""
    root = tmp_path_factory.mktemp("two") / "models"
    shutil.copytree(models_template, root)
    write_bundle(trained_runs[V2], root, dataset="other", version=OTHER)
    set_current(root, OTHER)
    return root

@pytest.fixture()
def api(tmp_path, models_template):
    settings = make_settings(tmp_path, models_template)
    queued: list[str] = []
    app = create_app(settings, enqueue=queued.append)
    with TestClient(app) as client:
        yield Api(client, settings, queued)
