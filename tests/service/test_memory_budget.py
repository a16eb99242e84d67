"""Serving many collections within a memory budget (service/memory_budget.py,
service/collections.py): the rule on hand-made cases, a loaded bundle's measured size, and one
API process (in process, real bundles) with three collections and a budget that fits two."""

import shutil
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.catch_up import SerialThread
from service.memory_budget import (
    MB,
    Loaded,
    budget_bytes,
    bundle_bytes,
    disk_bytes,
    encoder_bytes,
    to_unload,
)
from tests.collection_status import loaded, unloads
from tests.service.conftest import V1, make_settings
from trainer.bundle import Bundle, set_current, write_bundle
from trainer.encoder_file import EmbeddingModel

NAMES = ("a", "b", "c")
ITEM = "train/cat/0000.jpg"


def test_the_least_recently_used_idle_collections_go_first():
    loaded = [Loaded("old", 40, last_used=1.0, in_flight=0),
              Loaded("busy", 40, last_used=0.5, in_flight=1),
              Loaded("new", 40, last_used=3.0, in_flight=0),
              Loaded("mid", 40, last_used=2.0, in_flight=0)]
    # 160 loaded + 30 incoming against 150: one unload (40) is enough, the oldest idle one.
    assert to_unload(loaded, 30, 150) == ["old"]
    # Against 110: "busy" is older but in use, so "old" then "mid" (190 - 80).
    assert to_unload(loaded, 30, 110) == ["old", "mid"]
    # The collection loading is never its own victim; nothing fits: every idle one goes.
    assert to_unload(loaded, 30, 10, keep="new") == ["old", "mid"]
    assert to_unload(loaded, 30, 190) == []
    assert to_unload(loaded, 10**9, None) == []
    assert budget_bytes(0) is None and budget_bytes(3) == 3 * MB


def test_a_loaded_bundle_is_measured_from_what_is_loaded(models_template, tmp_path):
    class Session:  # an onnxruntime engine: what it holds is its graph's file
        pass

    assert encoder_bytes(Session(), tmp_path) == 0  # no encoder.onnx in the folder
    (tmp_path / "encoder.onnx").write_bytes(b"x" * 96)
    assert encoder_bytes(Session(), tmp_path) == 96
    bundle = Bundle.load(models_template, V1, device="cpu")
    # The torch engine: its inference graph's weights, counted before it was frozen (a frozen
    # TorchScript graph holds them as constants, not parameters).
    trained = EmbeddingModel.load(models_template / V1 / "encoder.pt", "cpu", "fp32")
    fp32 = sum(p.numel() * p.element_size() for p in trained.model.parameters())
    params = encoder_bytes(bundle.model, models_template / V1)
    assert params == bundle.model.nbytes and fp32 / 2.2 < params <= fp32  # bf16 or fp32
    index_file = (models_template / V1 / "index.faiss").stat().st_size
    assert bundle.vectors.nbytes == 120 * bundle.dim * 4
    assert bundle_bytes(bundle) >= bundle.vectors.nbytes + index_file + params
    assert disk_bytes(models_template, V1) > bundle.vectors.nbytes + index_file


def test_an_idle_serial_thread_ends_and_the_next_call_starts_another():
    thread = SerialThread("idle-test", idle_s=0.05)
    assert thread.submit(lambda: 1).result(timeout=5) == 1
    deadline = time.monotonic() + 5
    while thread._thread is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert thread._thread is None
    assert thread.submit(lambda: 2).result(timeout=5) == 2


@pytest.fixture(scope="module")
def three_collections(tmp_path_factory, trained_runs):
    """Three tiny collections with one model each (the same run, so the same answers)."""
    root = tmp_path_factory.mktemp("three") / "models"
    for name in NAMES:
        version = f"20260101-00000{NAMES.index(name)}-{name}"
        write_bundle(trained_runs[V1], root, dataset=name, version=version)
        set_current(root, version)
    return root


def _budget_for_two(root) -> int:
    """Room for two loaded collections, not three, as the API counts: a loaded one by what it
    holds (L), one about to load by its files (D; the served encoder is bf16, its file fp32).
    One loaded and one loading fit (L + D), two loaded and a third loading do not (2L + D)."""
    version = next(p.name for p in root.iterdir() if p.name.endswith("-a"))
    loaded = bundle_bytes(Bundle.load(root, version, device="cpu"))
    return int(1.5 * loaded + disk_bytes(root, version))


def _app(tmp_path, root):
    settings = make_settings(tmp_path, root, serve_memory_mb=1)
    app = create_app(settings, enqueue=lambda j: None)
    assert app.state.collections.budget == MB  # SERVE_MEMORY_MB, in bytes
    app.state.collections.budget = _budget_for_two(root)  # a collection is well under 1 MB
    return TestClient(app)


def test_the_least_recently_used_collection_is_unloaded_and_reloads(tmp_path,
                                                                    three_collections):
    with _app(tmp_path, three_collections) as c:
        # At start: only what fits, by name (no default).
        assert loaded(c) == {"a": True, "b": True, "c": False}
        first = {}
        for name in ("b", "a"):  # b is now the least recently used
            r = c.get(f"/collections/{name}/neighbours/{ITEM}", params={"k": 5})
            assert r.status_code == 200
            first[name] = r.json()
        r = c.get(f"/collections/c/neighbours/{ITEM}", params={"k": 5})
        assert r.status_code == 200 and r.headers["x-model-version"].endswith("-c")
        assert loaded(c) == {"a": True, "b": False, "c": True}
        assert unloads(c, "b") == 1 and unloads(c, "a") == 0
        metrics = c.get("/metrics").text
        assert 'and_collection_loaded_bytes{collection="c"}' in metrics
        assert 'and_collection_loaded_bytes{collection="b"}' not in metrics
        for name in NAMES:
            assert f'and_model_info{{collection="{name}",' in metrics
        # b's next request reloads it (a, now least recently used, goes) and answers the same.
        r = c.get(f"/collections/b/neighbours/{ITEM}", params={"k": 5})
        assert r.status_code == 200 and r.json() == first["b"]
        assert loaded(c) == {"a": False, "b": True, "c": True}
        assert unloads(c, "a") == 1
        collections = c.app.state.collections
        assert sum(collections.loaded_bytes().values()) <= collections.budget


def test_a_collection_in_use_is_not_unloaded_and_its_request_still_answers(
        tmp_path, three_collections):
    with _app(tmp_path, three_collections) as c:
        collections = c.app.state.collections
        c.get(f"/collections/a/neighbours/{ITEM}")
        c.get(f"/collections/b/neighbours/{ITEM}")
        with collections.using("a") as registry:  # a request in flight on a (the oldest)
            served = c.portal.call(registry.get)
            assert not collections.unload("a")
            r = c.get(f"/collections/c/neighbours/{ITEM}")  # needs room: b goes, not a
            assert r.status_code == 200
            assert loaded(c) == {"a": True, "b": False, "c": True}
        before = served.index.search(served.bundle.vectors[:2], 3)
        assert collections.unload("a")  # idle now
        assert loaded(c)["a"] is False and registry.current is None
        # The request that held a's model goes on with it after the unload.
        after = served.index.search(served.bundle.vectors[:2], 3)
        assert after.ids == before.ids
        r = c.get(f"/collections/a/neighbours/{ITEM}")
        assert r.status_code == 200 and loaded(c)["a"] is True


def test_without_a_budget_every_collection_loads_at_start(tmp_path, three_collections):
    settings = make_settings(tmp_path, three_collections)
    assert settings.serve_memory_mb == 0
    with TestClient(create_app(settings, enqueue=lambda j: None)) as c:
        assert loaded(c) == {"a": True, "b": True, "c": True}



def test_a_collection_grown_by_adds_past_the_budget_unloads_the_idle_ones(tmp_path,
                                                                          three_collections):
    with _app(tmp_path, three_collections) as c:
        collections = c.app.state.collections
        for name in ("b", "a"):  # b is the least recently used
            assert c.get(f"/collections/{name}/neighbours/{ITEM}").status_code == 200
        assert loaded(c) == {"a": True, "b": True, "c": False}
        served = collections.registry("a").current
        assert served.nbytes == served.bundle_bytes  # nothing added yet
        # Live adds to a, more than the budget has left: a holds them in its index.
        room = collections.budget - sum(collections.loaded_bytes().values())
        rows = room // (served.index.dim * 4) + 10
        vectors = np.random.default_rng(0).standard_normal((rows, served.index.dim))
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        served.index.upsert([f"grown/{n}" for n in range(rows)], vectors, [None] * rows)
        assert served.nbytes == served.bundle_bytes + rows * served.index.dim * 4
        assert loaded(c) == {"a": True, "b": True, "c": False}  # nothing checked yet
        r = c.get(f"/collections/a/neighbours/{ITEM}")  # the next request to a checks
        assert r.status_code == 200
        assert loaded(c) == {"a": True, "b": False, "c": False}
        assert unloads(c, "b") == 1
        assert list(collections.loaded_bytes()) == ["a"]  # a itself is never unloaded for it


def test_what_a_live_index_holds_beyond_its_bundle():
    from live.index import LiveIndex
    from trainer.index import build

    base = np.eye(4, 8, dtype=np.float32)
    index = LiveIndex(build(base, "flat"), base, ["a", "b", "c", "d"], np.full(4, -1), [])
    assert index.grown_bytes == 0
    index.upsert(["e", "f"], np.eye(2, 8, 4, dtype=np.float32), [None, None])
    assert index.grown_bytes == 2 * 8 * 4
    index.rebuild("flat")
    # The rebuilt base: 6 vectors of 8 floats, and a flat index holding the same.
    assert index.grown_bytes == 2 * 6 * 8 * 4


def test_older_versions_kept_beside_the_current_ones_go_before_a_whole_collection(
        tmp_path, three_collections, trained_runs):
    root = tmp_path / "models-kept"
    shutil.copytree(three_collections, root)
    older = "20260101-000009-a"  # a second version of collection a, never current
    write_bundle(trained_runs[V1], root, dataset="a", version=older)
    with _app(tmp_path, root) as c:
        collections = c.app.state.collections
        for name in ("b", "a"):  # b is the least recently used
            assert c.get(f"/collections/{name}/neighbours/{ITEM}").status_code == 200
        # A request pinning a's older version loads it beside a's current one: b goes.
        r = c.get(f"/collections/a/neighbours/{ITEM}", params={"model_version": older})
        assert r.status_code == 200 and r.headers["x-model-version"] == older
        assert loaded(c) == {"a": True, "b": False, "c": False}
        assert older in collections.registry("a").loaded_versions
        # c needs room: a's kept older version goes, not a itself (a is now the oldest).
        assert c.get(f"/collections/c/neighbours/{ITEM}").status_code == 200
        assert loaded(c) == {"a": True, "b": False, "c": True}
        assert collections.registry("a").loaded_versions == [
            collections.registry("a").current.version]
        assert unloads(c, "a") == 0
