"""Two collections served by one API process (in process, real bundles): each route under
/collections/{name} answers from that collection's model only, the routes at the root from the
default one, and a promote in one leaves the other as it was. A models folder with the single
CURRENT of earlier versions is migrated when the API starts."""

import base64
import shutil
import zipfile

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.client import ApiError, Client
from service.client.cli import error_text
from service.client.core import Core
from service.errors import PROBLEM
from service.limits import DUPLICATE_THRESHOLD_MIN, Limits
from tests.conftest import CIFAR_SLICE
from tests.service.conftest import ADMIN, OTHER, V1, V2, make_settings
from trainer.bundle import write_bundle
from trainer.current import collections
from trainer.files import atomic_write_text

FRESH = "20260104-000000-fresh"

ITEM = "train/cat/0000.jpg"
with zipfile.ZipFile(CIFAR_SLICE) as _z:
    RAW_CAT = _z.read("cifar10/test/cat/0001.jpg")
CAT = base64.b64encode(RAW_CAT).decode()
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}



def _app(tmp_path, template, **settings):
    return TestClient(create_app(make_settings(tmp_path, template, **settings),
                                 enqueue=lambda j: None))


def test_each_collection_serves_its_own_model(tmp_path, two_collections):
    with _app(tmp_path, two_collections) as c:
        listed = c.get("/collections").json()
        assert listed["count"] == 2 and listed["default"] is None
        by_name = {d["name"]: d for d in listed["data"]}
        assert by_name["cifar-slice"]["current_version"] == V1
        assert by_name["other"]["current_version"] == OTHER
        assert by_name["other"]["model"]["dataset"] == "other"
        assert by_name["cifar-slice"]["item_count"] == 120
        for name, version in (("cifar-slice", V1), ("other", OTHER)):
            r = c.get(f"/collections/{name}/neighbours/{ITEM}", params={"k": 3})
            assert r.status_code == 200 and r.headers["x-model-version"] == version
            r = c.post(f"/collections/{name}/search", json={"images": [CAT], "k": 2})
            assert r.status_code == 200 and r.json()["model_version"] == version
            r = c.post(f"/collections/{name}/embed", files=[("files", ("a.jpg", RAW_CAT))])
            assert r.status_code == 200 and r.json()["model_version"] == version
            r = c.post(f"/collections/{name}/classify", json={"ids": [ITEM]})
            assert r.status_code == 200 and r.json()["model_version"] == version
            r = c.get(f"/collections/{name}/models/{version}/map")
            assert r.status_code == 200 and r.headers["x-model-version"] == version
        # A version of one collection is unknown in the other, pinned or promoted.
        r = c.get(f"/collections/other/neighbours/{ITEM}", params={"model_version": V1})
        assert r.status_code == 404
        r = c.post(f"/collections/other/models/{V2}/promote", headers=ADMIN_HEADERS)
        assert r.status_code == 404
        assert [m["version"] for m in c.get("/collections/other/models").json()["data"]] == [
            OTHER]
        # At the root, with two collections and no default: a 409 that names them.
        r = c.get(f"/neighbours/{ITEM}")
        assert r.status_code == 409 and r.headers["content-type"].startswith(PROBLEM)
        assert "cifar-slice" in r.json()["detail"] and "other" in r.json()["detail"]
        assert c.get("/collections/nowhere/neighbours/x.jpg").status_code == 404
        assert c.get("/collections/nowhere").status_code == 404
        assert c.get("/collections/nowhere/models").status_code == 404
        assert c.get("/readyz").status_code == 200


def test_a_dataset_whose_only_model_is_a_candidate_is_a_collection(tmp_path, models_template,
                                                                   trained_runs):
    """Its first model kept out by the gate, dataset "fresh" still has a collection: listed
    with no current model, its versions listed, a pinned version served, an unpinned request
    told why, and a promotion through it. The root routes keep serving the one collection
    that has a current model. Published before publication registered collections, its
    collection is registered when the API starts."""
    models = tmp_path / "mine"
    shutil.copytree(models_template, models)
    write_bundle(trained_runs[V2], models, dataset="fresh", version=FRESH)
    assert collections(models, published=True) == ["cifar-slice", "fresh"]
    assert collections(models) == ["cifar-slice"]
    shutil.rmtree(models / "collections" / "fresh")  # as an older version left it
    with _app(tmp_path, models, models_root=models) as c:
        listed = {d["name"]: d for d in c.get("/collections").json()["data"]}
        assert listed["fresh"]["current_version"] is None and listed["fresh"]["model"] is None
        assert listed["cifar-slice"]["current_version"] == V1
        assert [m["version"] for m in c.get("/collections/fresh/models").json()["data"]] == [
            FRESH]
        r = c.get(f"/collections/fresh/neighbours/{ITEM}")
        assert r.status_code == 503 and "'fresh' has no current model" in r.json()["detail"]
        r = c.get(f"/collections/fresh/neighbours/{ITEM}", params={"model_version": FRESH})
        assert r.status_code == 200 and r.headers["x-model-version"] == FRESH
        assert c.get(f"/neighbours/{ITEM}").headers["x-model-version"] == V1
        r = c.post(f"/collections/fresh/models/{FRESH}/promote", headers=ADMIN_HEADERS)
        assert r.status_code == 200, r.text
        r = c.get(f"/collections/fresh/neighbours/{ITEM}")
        assert r.status_code == 200 and r.headers["x-model-version"] == FRESH


def test_a_promote_in_one_collection_leaves_the_other_alone(tmp_path, two_collections):
    with _app(tmp_path, two_collections) as c:
        r = c.post(f"/collections/cifar-slice/models/{V2}/promote", headers=ADMIN_HEADERS)
        assert r.status_code == 200, r.text
        assert c.get("/collections/cifar-slice").json()["current_version"] == V2
        other = c.get("/collections/other").json()
        assert other["current_version"] == OTHER and other["previous_version"] is None
        r = c.get(f"/collections/other/neighbours/{ITEM}")
        assert r.headers["x-model-version"] == OTHER
        r = c.get(f"/collections/cifar-slice/neighbours/{ITEM}")
        assert r.headers["x-model-version"] == V2
        r = c.post("/collections/cifar-slice/models/current/rollback", headers=ADMIN_HEADERS)
        assert r.status_code == 200 and r.json()["version"] == V1
        r = c.post("/collections/other/models/current/rollback", headers=ADMIN_HEADERS)
        assert r.status_code == 409


def test_a_collection_exports_its_own_models_only(tmp_path, two_collections):
    with _app(tmp_path, two_collections) as c:
        r = c.get(f"/collections/other/models/{OTHER}/encoder.onnx.json")
        assert r.status_code == 200 and r.json()["model_version"] == OTHER
        r = c.get(f"/collections/other/models/{OTHER}/encoder.onnx")
        assert r.status_code == 200 and r.headers["x-model-version"] == OTHER
        assert r.content == (tmp_path / "models" / OTHER / "encoder.onnx").read_bytes()
        for path in (f"/collections/other/models/{V1}/encoder.onnx",
                     f"/collections/other/models/{V1}/encoder.onnx.json"):
            r = c.get(path)
            assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)
            assert "other" in r.json()["detail"]


def test_the_default_collection_serves_the_root_routes(tmp_path, two_collections):
    with _app(tmp_path, two_collections, default_collection="other") as c:
        r = c.get(f"/neighbours/{ITEM}")
        assert r.status_code == 200 and r.headers["x-model-version"] == OTHER
        assert c.get("/collections").json()["default"] == "other"
        assert c.get("/models").json()["current"] == OTHER


def test_links_in_an_answer_stay_in_the_collection_that_was_asked(tmp_path, two_collections):
    """The root serves the default collection ("other" here): a link out of
    /collections/cifar-slice that dropped the prefix would open the other collection."""
    settings = make_settings(tmp_path, two_collections, default_collection="other")
    with zipfile.ZipFile(CIFAR_SLICE) as z:  # cifar-slice's images, as a folder
        z.extractall(settings.data_root / "cifar-slice")
    with TestClient(create_app(settings, enqueue=lambda j: None)) as c:
        item = c.get(f"/collections/cifar-slice/items/{ITEM}").json()
        assert item["model_version"] == V1
        for name, url in item["links"].items():
            assert url.startswith("/collections/cifar-slice/"), (name, url)
            r = c.get(url)
            assert r.status_code == 200, (name, url, r.text[:200])
            assert r.headers["x-model-version"] == V1, (name, url)
        pairs = c.get(f"/collections/cifar-slice/models/{V1}/duplicates",
                      params={"threshold": DUPLICATE_THRESHOLD_MIN, "limit": 1}).json()["pairs"]
        image = pairs[0]["a"]["image"]
        assert image.startswith(f"/collections/cifar-slice/models/{V1}/images/")
        assert c.get(image).status_code == 200
        r = c.post("/collections/cifar-slice/items", headers=ADMIN_HEADERS,
                   data={"ids": ["added/cat.jpg"]}, files=[("files", ("cat.jpg", RAW_CAT))])
        assert r.status_code == 201, r.text
        assert r.headers["location"] == "/collections/cifar-slice/items/added/cat.jpg"
        assert c.get(r.headers["location"]).json()["model_version"] == V1


def test_images_that_cannot_be_reached_are_said_once(tmp_path, two_collections):
    with _app(tmp_path, two_collections) as c:
        other = c.get("/collections/other").json()
        assert other["images_available"] is False
        assert "not on this server" in other["images_problem"]


def test_a_single_current_models_folder_is_migrated_on_start(tmp_path, models_template):
    """The pointers as the single-CURRENT code wrote them: V1 current, V2 before it."""
    old = tmp_path / "old"
    shutil.copytree(models_template, old)
    shutil.rmtree(old / "collections")
    atomic_write_text(old / "PREVIOUS", V2 + "\n")
    atomic_write_text(old / "CURRENT", V1 + "\n")
    with _app(tmp_path, old) as c:
        assert not (c.app.state.settings.models_root / "CURRENT").exists()
        only = c.get("/collections/cifar-slice").json()
        assert (only["current_version"], only["previous_version"]) == (V1, V2)
        r = c.get(f"/neighbours/{ITEM}")  # the only collection: the root routes serve it
        assert r.status_code == 200 and r.headers["x-model-version"] == V1
        r = c.post("/models/current/rollback", headers=ADMIN_HEADERS)
        assert r.status_code == 200 and r.json()["version"] == V2


def test_a_route_under_a_collection_takes_the_bodies_it_takes_at_the_root(tmp_path,
                                                                       models_template):
    limits = Limits.of(make_settings(tmp_path, models_template))
    for path, media in (("/items", "multipart/form-data"), ("/items", "application/json"),
                        ("/embed", "multipart/form-data"), ("/search", "application/json")):
        assert limits.body_limit(f"/collections/slice{path}", media) == limits.body_limit(
            path, media) > limits.body_limit("/collections/slice", media)


def test_the_python_client_addresses_one_collection(tmp_path, two_collections):
    with _app(tmp_path, two_collections) as c:
        # `http`: the in-process app; never closed here (the app's client is the test's).
        listed = Client("http://testserver", http=c).collections()
        assert listed.count == 2
        by_name = {x.name: x for x in listed.data}
        assert by_name["other"].current_version == OTHER and by_name["other"].loaded
        assert by_name["other"].model is not None and by_name["other"].model.dataset == "other"
        for name, version in (("cifar-slice", V1), ("other", OTHER)):
            api = Client("http://testserver", admin_key=ADMIN, http=c, collection=name)
            assert api.neighbours(ITEM, k=3).model_version == version
            assert api.embed([RAW_CAT]).model_version == version
            assert api.search([RAW_CAT], k=2).model_version == version
            assert api.classify_items([ITEM]).model_version == version
            assert api.models().current == version
            assert api.item(ITEM).dataset == name
            # Paging follows the API's own links, which already name the collection.
            assert len(list(api.items(page_size=50))) == 120
        # Unscoped, with two collections and no default: the API's 409, naming them.
        with pytest.raises(ApiError) as refused:
            Client("http://testserver", http=c).neighbours(ITEM)
        assert refused.value.status == 409 and "other" in (refused.value.detail or "")
        # The command line says how to choose, in its own terms (not "use /collections/...").
        assert error_text(refused.value) == (
            "409 this service has several collections (cifar-slice, other): choose one with "
            "--collection NAME or $AND_COLLECTION")


def test_a_scoped_client_sends_serving_routes_under_its_collection(monkeypatch):
    monkeypatch.delenv("AND_COLLECTION", raising=False)
    plain = Core.of("http://api", None, None, None, 64)
    assert plain.routed("/neighbours/a/b.jpg") == "/neighbours/a/b.jpg"
    scoped = Core.of("http://api", None, None, None, 64, "my shoes")
    assert scoped.routed("/neighbours/a/b.jpg") == "/collections/my%20shoes/neighbours/a/b.jpg"
    for route in ("/embed", "/search", "/classify", "/items?cursor=x", "/models/v1/promote"):
        assert scoped.routed(route) == "/collections/my%20shoes" + route
    for route in ("/jobs", "/train", "/datasets", "/collections", "/healthz",
                  "/collections/other/items?cursor=x"):
        assert scoped.routed(route) == route
    monkeypatch.setenv("AND_COLLECTION", "shoes")
    assert Core.of(None, None, None, None, 64).routed("/embed") == "/collections/shoes/embed"
