"""The OpenAPI document says exactly what the API accepts: schemathesis runs every check it has
against the real API process (keys set, a dataset and a published model present, small limits
so that bodies at the limits stay cheap) and finds nothing, apart from the two exceptions
tests/service/schemathesis_hooks.py lists and explains."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.errors import PROBLEM
from tests.conftest import CIFAR_SLICE
from tests.processes import REPO
from tests.service.api_process import READ, ApiProcess
from tests.service.conftest import ADMIN, make_settings
from trainer.config import TrainConfig

SMALL_LIMITS = {"MAX_IMAGE_MB": "0.02", "MAX_IMAGES_PER_REQUEST": "4", "MAX_UPLOAD_MB": "1",
                "MAX_EXTRACTED_MB": "2", "MAX_ARCHIVE_ENTRIES": "500", "MAX_K": "50",
                "MAX_CLASSIFY_K": "50", "METRICS_API_KEY": "metrics-key-for-tests-0123",
                "API_DOCS": "key"}


@pytest.fixture(scope="module")
def api(tmp_path_factory, models_template):
    server = ApiProcess(tmp_path_factory.mktemp("contract"), models_template, **SMALL_LIMITS)
    yield server
    server.stop()


def test_schemathesis_with_every_check_finds_nothing(api, tmp_path):
    binary = shutil.which("schemathesis", path=os.path.dirname(sys.executable))
    assert binary, "schemathesis is not installed"
    trace = tmp_path / "checks.txt"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.service.schemathesis_hooks",
           "PYTHONPATH": str(REPO), "CONTRACT_CHECKS_TRACE": str(trace)}
    args = [binary, "run", f"{api.url}/openapi.json", "--checks", "all",
            # Replaced by the hooks' versions, which differ by one listed exception each.
            "--exclude-checks", "positive_data_acceptance,use_after_free",
            "--header", f"Authorization: Bearer {ADMIN}", "--max-examples", "40",
            "--seed", "7", "--workers", "1", "--no-color"]
    # cwd: schemathesis keeps a cache folder (.schemathesis) where it runs.
    r = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-12000:] + r.stderr[-3000:]
    ran = set(trace.read_text().split())
    assert ran == {"positive_data_acceptance_but_contents", "use_after_free_but_cancel"}
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in r.stdout, r.stdout[-6000:]


def test_post_items_accepts_every_body_its_schema_allows(api, tmp_path):
    """Every check on POST /items alone, quick (no stateful phase). A full run once reported
    the body 0 refused although allowed: the multipart schema's `oneOf` branches were bare
    `required` lists, which allow any non-object read alone."""
    binary = shutil.which("schemathesis", path=os.path.dirname(sys.executable))
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.service.schemathesis_hooks",
           "PYTHONPATH": str(REPO)}
    args = [binary, "run", f"{api.url}/openapi.json", "--include-name", "POST /items",
            "--phases", "examples,coverage,fuzzing",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance,use_after_free",
            "--header", f"Authorization: Bearer {ADMIN}", "--max-examples", "40",
            "--seed", "7", "--workers", "1", "--no-color"]
    r = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-2000:]


# --- the document itself (in process) -----------------------------------------------------------

def _document(tmp_path, models_template, **settings) -> dict:
    app = create_app(make_settings(tmp_path, models_template, **settings),
                     enqueue=lambda j: None)
    with TestClient(app) as client:
        r = client.get("/openapi.json", headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200, r.text
        return r.json()


def _operations(doc: dict):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield f"{method.upper()} {path}", op


ADMIN_OPS = {"POST /datasets", "POST /train", "DELETE /jobs/{job_id}",
             "POST /models/{version}/promote", "POST /models/current/rollback", "POST /items",
             "DELETE /items", "PUT /datasets/{name}/retrain",
             "DELETE /items/{item_id}"}
ADMIN_OPS |= {op.replace(" /", " /collections/{collection}/", 1) for op in ADMIN_OPS
              if op.split()[1].startswith(("/items", "/models"))}
ADMIN_OPS |= {"PUT /collections/{collection}/key", "DELETE /collections/{collection}/key"}


@pytest.mark.parametrize(("keys", "secured"), [
    ({"admin_api_key": None}, set()),                   # development, no key: all open
    ({}, ADMIN_OPS),                                     # the admin key only
    ({"read_api_key": READ}, "all but the probes"),
])
def test_security_is_declared_where_a_key_is_in_force(tmp_path, models_template, keys,
                                                      secured):
    doc = _document(tmp_path, models_template, **keys)
    declared = {name for name, op in _operations(doc) if op.get("security")}
    if secured == "all but the probes":
        secured = {name for name, _ in _operations(doc)} - {"GET /healthz", "GET /readyz"}
    assert declared == secured
    assert ("securitySchemes" in doc["components"]) == bool(secured)
    for name, op in _operations(doc):
        assert ("401" in op["responses"]) == (name in secured), name
        assert "500" in op["responses"], name


def test_parameters_and_bodies_carry_their_real_bounds(tmp_path, models_template):
    doc = _document(tmp_path, models_template, max_k=77, max_images_per_request=5)
    params = {(name, p["name"]): p for name, op in _operations(doc)
              for p in op.get("parameters", [])}
    k = params[("GET /neighbours/{item_id}", "k")]["schema"]
    assert (k["minimum"], k["maximum"], k["type"]) == (1, 77, "integer")
    assert params[("GET /neighbours/{item_id}", "item_id")]["schema"]["pattern"]
    for name in ("GET /models/{version}", "POST /models/{version}/promote"):
        assert params[(name, "version")]["schema"]["pattern"]
    assert params[("GET /jobs/{job_id}", "job_id")]["schema"]["pattern"]
    schemas = doc["components"]["schemas"]
    search = schemas["SearchRequest"]
    assert search["properties"]["vectors"]["maxItems"] == 5
    vector = search["properties"]["vectors"]["items"]
    assert vector["minItems"] == vector["maxItems"] == 128  # the current model's dimension
    assert search["oneOf"] and schemas["ClassifyRequest"]["oneOf"]
    form = doc["paths"]["/embed"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["properties"]["files"]["maxItems"] == 5
    assert form["encoding"]["files"]["contentType"].startswith("image/jpeg")
    upload = doc["paths"]["/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert set(upload["schema"]["required"]) == {"name", "file"}
    assert "application/zip" in upload["encoding"]["file"]["contentType"]


def test_the_training_config_is_a_schema_of_its_own(tmp_path, models_template):
    doc = _document(tmp_path, models_template)
    train = doc["components"]["schemas"]["TrainRequest"]
    assert train["properties"]["config"]["$ref"] == "#/components/schemas/TrainConfig"
    config = doc["components"]["schemas"]["TrainConfig"]
    assert config["additionalProperties"] is False
    assert set(config["properties"]) == set(TrainConfig.documentation())
    for key, prop in config["properties"].items():
        assert prop["description"] and "default" in prop and "type" in prop, key
    rounds = config["properties"]["rounds"]
    assert (rounds["minimum"], rounds["maximum"], rounds["default"]) == (1, 100, 5)
    assert config["properties"]["backbone"]["enum"] == ["resnet18_cifar", "small_cnn",
                                                        "resnet18"]


BOUNDARY_CASES = [
    ({"rounds": 100}, True), ({"rounds": 101}, False), ({"tau": 10}, True), ({"tau": 0}, False),
    ({"image_size": 0}, True), ({"image_size": 7}, False), ({"image_size": 8}, True),
    ({"momentum": 0}, False), ({"momentum": 0, "nesterov": False}, True),
    ({"nesterov": "true"}, False), ({"lr_milestones": 0.5}, False),
    ({"lr_milestones": [0.8, 0.2]}, True), ({"device": "cuda:1"}, True),
    ({"device": "cudax"}, False), ({"seed": 2**63 - 1}, True), ({"seed": 2**63}, False),
    ({"rounds": 2.0}, True), ({"rounds": 2.5}, False), ({"colour": 1}, False),
]


@pytest.mark.parametrize(("config", "valid"), BOUNDARY_CASES,
                         ids=[repr(c) for c, _ in BOUNDARY_CASES])
def test_post_train_accepts_what_the_config_schema_accepts(contract_app, config, valid):
    client = contract_app
    r = client.post("/train", json={"dataset": "ok", "config": config},
                    headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == (202 if valid else 422), r.text


@pytest.fixture(scope="module")
def contract_app(tmp_path_factory, models_template):
    tmp = tmp_path_factory.mktemp("contract-app")
    settings = make_settings(tmp, models_template)
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        z.extractall(tmp / "unpacked")
    (tmp / "unpacked" / "cifar10").rename(settings.data_root / "ok")
    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        yield client


def test_405_lists_every_method_of_the_path(contract_app):
    for method, url, allow in (("OPTIONS", "/datasets", "GET, POST"),
                               ("PUT", "/jobs/abc", "DELETE, GET"),
                               ("PATCH", "/neighbours/a/b.jpg", "GET")):
        r = contract_app.request(method, url)
        assert r.status_code == 405 and r.headers["allow"] == allow, (url, r.headers)
        assert r.headers["content-type"].startswith(PROBLEM)


def test_classify_scores_stay_numbers_for_the_smallest_sigma(contract_app):
    r = contract_app.post("/classify", json={"ids": ["train/cat/0000.jpg"], "k": 5,
                                             "sigma": 5e-324})
    assert r.status_code == 200, r.text
    scores = r.json()["predictions"][0]["scores"]
    assert all(isinstance(v, float) for v in scores.values())
    assert abs(sum(scores.values()) - 1) < 1e-6


def test_the_published_config_bounds_gpus_by_the_live_workers(tmp_path, models_template):
    from state.stores import open_store

    settings = make_settings(tmp_path, models_template)
    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        def config() -> dict:
            r = client.get("/openapi.json", headers={"Authorization": f"Bearer {ADMIN}"})
            return r.json()["components"]["schemas"]["TrainConfig"]

        before = config()
        assert before["properties"]["gpus"]["maximum"] == 1  # no worker advertised more
        assert before["properties"]["nodes"]["maximum"] == 1 and "allOf" not in before
        open_store(settings).advertise_capacity("w8", 8, 60)
        after = config()
    assert after["properties"]["gpus"]["maximum"] == 8
    rules = {r["if"]["properties"]["gpus"]["const"]:
             r["then"]["properties"]["batch_size"]["minimum"] for r in after["allOf"]}
    assert rules == {k: 2 * k for k in range(2, 9)}


def test_one_of_branches_allow_only_objects(tmp_path, models_template):
    """A `oneOf` branch read alone (as a generator may) allows no scalar such as 0."""
    doc = _document(tmp_path, models_template)

    def branches(node):
        if isinstance(node, dict):
            yield from node.get("oneOf", [])
            for value in node.values():
                yield from branches(value)
        elif isinstance(node, list):
            for value in node:
                yield from branches(value)

    found = [b for b in branches(doc) if "required" in b]
    assert len(found) >= 6
    assert all(b.get("type") == "object" for b in found), found
