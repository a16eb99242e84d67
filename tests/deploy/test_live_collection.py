"""The live collection through the real processes (API and worker, on Redis and on the embedded
default), over HTTP only: adds found at once, deletes never seen again, both kept across an API
restart and a kill -9 in the middle of a bulk add, replicas converging, and a training job whose
publish and swap race with adds and deletes."""

from __future__ import annotations

import contextlib
import io
import os
import random
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import CIFAR_SLICE
from tests.deploy.test_e2e import assert_weighted_vote
from tests.processes import Process, free_port, start_worker, wait_for

KEY = "live-admin-key-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {KEY}"}
POLL_S = 0.3
TINY = {"backbone": "small_cnn", "rounds": 1, "epochs_per_round": 1, "batch_size": 32,
        "knn_k": 10, "num_workers": 0}


def picture(seed: int, shift: int = 0) -> bytes:
    """A distinct 32x32 picture (coloured shapes on a coloured ground); `shift` brightens it a
    little: the slightly altered copy a user searches with."""
    rng = random.Random(seed)
    image = Image.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.randrange(24), rng.randrange(24)
        box = (x, y, x + rng.randrange(4, 14), y + rng.randrange(4, 14))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    if shift:
        image = Image.fromarray(np.clip(np.asarray(image, np.int16) + shift, 0, 255).astype(
            np.uint8))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


class Stack:
    """API process(es) and a worker on one data folder and one store."""

    def __init__(self, root: Path, broker_url: str | None) -> None:
        self.root = root
        self.env = {**os.environ, "DATA_ROOT": str(root / "data"),
                    "MODELS_ROOT": str(root / "models"), "STATE_ROOT": str(root / "state"),
                    "ADMIN_API_KEY": KEY, "KEY_PREFIX": f"live-{os.getpid()}-{id(self)}:",
                    "MODEL_POLL_S": str(POLL_S), "HEARTBEAT_S": "0.5", "LEASE_S": "5",
                    # The routes at the root serve `slice` when a second collection comes.
                    "DEFAULT_COLLECTION": "slice", "PYTHONUNBUFFERED": "1"}
        self.env.pop("BROKER_URL", None)
        if broker_url:
            self.env["BROKER_URL"] = broker_url
        self.apis: list[tuple[Process, str]] = []
        self.worker = start_worker(self.env, root / "worker.log")

    def start_api(self) -> str:
        port = free_port()
        proc = Process([sys.executable, "-m", "service", "--port", str(port)], self.env,
                       self.root / f"api{len(self.apis)}.log")
        url = f"http://127.0.0.1:{port}"
        self.apis.append((proc, url))
        wait_for(lambda: _answers(url), 120, "the API to answer")
        return url

    def kill_api(self, url: str) -> None:
        for proc, u in self.apis:
            if u == url:
                proc.kill9()

    def stop(self) -> None:
        self.worker.stop()
        for proc, _ in self.apis:
            proc.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _train(c: httpx.Client, dataset: str = "slice", **config) -> str:
    r = c.post("/train", json={"dataset": dataset, "config": TINY | config, "promote": "always"},
               headers=ADMIN)
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    job = wait_for(lambda: (j := c.get(location).json())["status"] in (
        "succeeded", "failed", "canceled") and j, 300, "the job to end")
    assert job["status"] == "succeeded", job
    return job["model_version"]


def _serving(c: httpx.Client, version: str) -> None:
    wait_for(lambda: c.get("/readyz").json().get("checks", {}).get("model") == version, 60,
             f"the API to serve {version}")


@pytest.fixture(scope="module", params=["redis", "embedded"])
def stack(request, tmp_path_factory):
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    s = Stack(tmp_path_factory.mktemp(f"live-{request.param}"), url)
    try:
        api = s.start_api()
        with httpx.Client(base_url=api, timeout=120) as c, open(CIFAR_SLICE, "rb") as f:
            r = c.post("/datasets", data={"name": "slice"}, files={"file": ("s.zip", f)},
                       headers=ADMIN)
            assert r.status_code == 201, r.text
            s.version = _train(c)
            _serving(c, s.version)
        s.api = api
        s.kind = request.param
        yield s
    finally:
        s.stop()


def _add(c: httpx.Client, prefix: str, seeds: list[int], **params) -> httpx.Response:
    files = [("files", (f"{n:04d}.png", picture(n), "image/png")) for n in seeds]
    return c.post("/items", files=files, data={"prefix": prefix, "label": "shape"},
                  params=params, headers=ADMIN)


def _top_hits(c: httpx.Client, seeds: list[int], k: int = 1) -> list[list[str]]:
    out = []
    for start in range(0, len(seeds), 64):
        files = [("files", (f"{n}.png", picture(n, shift=2), "image/png"))
                 for n in seeds[start:start + 64]]
        r = c.post("/search", files=files, data={"k": str(k)})
        assert r.status_code == 200, r.text
        out.extend([n["id"] for n in res["neighbours"]] for res in r.json()["results"])
    return out


def _count(c: httpx.Client, prefix: str) -> int:
    version = c.get("/models").json()["current"]
    return c.get(f"/models/{version}/items", params={"prefix": prefix}).json()["count"]


def test_added_items_are_found_deleted_ones_never_again_across_a_restart(stack):
    c = httpx.Client(base_url=stack.api, timeout=120)
    seeds = list(range(1000, 1200))
    for start in range(0, 200, 64):  # 200 images, in requests of at most 64
        r = _add(c, "added/", seeds[start:start + 64])
        assert r.status_code == 201, r.text
        assert r.json()["model_version"] == stack.version
    ids = [f"added/{n:04d}.png" for n in seeds]
    assert _count(c, "added/") == 200
    # Each is found at once, as the top neighbour of its slightly altered copy.
    assert [h[0] for h in _top_hits(c, seeds)] == ids
    item = c.get(f"/items/{ids[0]}").json()
    assert item["label"] == "shape" and item["added_with"] == stack.version
    assert item["added_at"] and item["seq"] >= 1
    image = c.get(item["links"]["image"])
    assert image.status_code == 200 and image.content == picture(seeds[0])
    # Adding an id that exists is a conflict unless upsert; an upsert replaces the image.
    assert _add(c, "added/", seeds[:1]).status_code == 409
    r = c.post("/items", params={"upsert": "true"}, headers=ADMIN, files=[
        ("files", ("x.png", picture(7), "image/png"))], data={"ids": ids[0]})
    assert r.status_code == 201, r.text
    assert _top_hits(c, [7])[0][0] == ids[0]
    # Delete half, one by one and in bulk: never seen again.
    gone = ids[:100]
    for item_id in gone[:10]:
        assert c.delete(f"/items/{item_id}", headers=ADMIN).status_code == 200
    r = c.request("DELETE", "/items", json={"ids": gone[10:]}, headers=ADMIN)
    assert r.status_code == 200, r.text

    def check() -> None:
        hits = _top_hits(c, seeds, k=10)
        assert not {h for row in hits for h in row} & set(gone)
        assert [h[0] for h in hits[100:]] == ids[100:]
        assert _count(c, "added/") == 100
        assert c.get(f"/items/{gone[0]}").status_code == 404
        # The live items vote, added ones with their label and deleted ones never: the answer
        # is the weighted vote of the item's live neighbours. (Which label wins is the model's
        # business: this stack's one-epoch model puts every cosine near 0.99.)
        neighbours = c.get(f"/neighbours/{ids[150]}", params={"k": 50}).json()["neighbours"]
        assert "shape" in {n["label"] for n in neighbours}
        assert not {n["id"] for n in neighbours} & set(gone)
        classified = c.post("/classify", json={"ids": [ids[150]], "k": 50, "sigma": 0.1}).json()
        assert_weighted_vote(classified["predictions"][0], neighbours, 0.1)

    check()
    # kill -9 of the API and a new one: every add and delete is still there.
    stack.kill_api(stack.api)
    stack.api = stack.start_api()
    c = httpx.Client(base_url=stack.api, timeout=120)
    _serving(c, stack.version)
    check()


class _HeldArchive(io.BytesIO):
    """An archive the client uploads in chunks (httpx reads a file 64 KiB at a time): after
    the first chunk has gone out, the next read waits until `go` is set, so the API can be
    killed with the upload surely half done."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0
        self.half_sent, self.go = threading.Event(), threading.Event()

    def read(self, n: int | None = -1) -> bytes:
        self.reads += 1
        if self.reads == 2:  # the first chunk was written to the socket
            self.half_sent.set()
            self.go.wait(60)
        return super().read(n)


def test_a_bulk_add_killed_midway_is_entirely_in_or_entirely_out(stack, tmp_path):
    """Killed with the upload half sent (held there), then twice while the add is under way
    or just done (after a delay): each add is all there or not at all, and one was surely
    cut mid-upload."""
    c = httpx.Client(base_url=stack.api, timeout=120)
    outcomes: list[tuple[int | None, int]] = []  # (the answer, if any; items there after)
    for attempt, delay in enumerate((None, 0.6, 1.5)):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for n in range(300):
                z.writestr(f"{n:04d}.png", picture(5000 + 1000 * attempt + n))
        archive = _HeldArchive(buf.getvalue())
        assert len(archive.getvalue()) > 65536  # more than one chunk
        prefix = f"bulk{attempt}/"
        answer: list[int] = []

        def send(archive: _HeldArchive, prefix: str, answer: list[int]) -> None:
            with contextlib.suppress(httpx.HTTPError):  # the API is killed under it
                answer.append(httpx.post(
                    f"{stack.api}/items", headers=ADMIN, timeout=120,
                    files={"archive": ("a.zip", archive, "application/zip")},
                    data={"prefix": prefix}).status_code)

        if delay is not None:
            archive.go.set()  # not held
        sender = threading.Thread(target=send, args=(archive, prefix, answer))
        sender.start()
        if delay is None:
            assert archive.half_sent.wait(60), "the upload never started"
        else:
            time.sleep(delay)
        stack.kill_api(stack.api)
        archive.go.set()
        sender.join(60)
        assert not sender.is_alive()
        stack.api = stack.start_api()
        c = httpx.Client(base_url=stack.api, timeout=120)
        _serving(c, stack.version)
        count = _count(c, prefix)
        assert count in (0, 300), (prefix, count)
        outcomes.append((answer[0] if answer else None, count))
    # Half an upload adds nothing; an add that was answered is all there.
    assert outcomes[0] == (None, 0), outcomes
    assert all(count == 300 for status, count in outcomes if status is not None), outcomes
    assert all(status in (None, 201) for status, _ in outcomes), outcomes
    assert c.get("/readyz").status_code == 200


def test_replicas_converge_through_the_store(stack):
    """Two API processes on one store (Redis; or, on one machine, the embedded SQLite file)."""
    other = stack.start_api()
    a = httpx.Client(base_url=stack.api, timeout=60)
    b = httpx.Client(base_url=other, timeout=60)
    _serving(b, stack.version)
    r = a.post("/items", headers=ADMIN, files=[("files", ("r.png", picture(42), "image/png"))],
               data={"ids": "replica/r.png"})
    assert r.status_code == 201, r.text
    assert a.get("/items/replica/r.png").status_code == 200  # at once where it was written
    start = time.monotonic()
    wait_for(lambda: b.get("/items/replica/r.png").status_code == 200, 30, "the other replica")
    seen_after = time.monotonic() - start
    assert b.delete("/items/replica/r.png", headers=ADMIN).status_code == 200
    wait_for(lambda: a.get("/items/replica/r.png").status_code == 404, 30, "the delete on a")
    # Within MODEL_POLL_S, with room for a loaded machine.
    assert seen_after < POLL_S + 5


def test_changes_racing_a_publish_and_swap_end_in_the_new_model(stack):
    c = httpx.Client(base_url=stack.api, timeout=120)
    base = {i["id"] for i in c.get(f"/models/{stack.version}/items",
                                   params={"limit": 10_000}).json()["data"]}
    added: dict[str, int] = {}
    deleted: set[str] = set()
    stop = threading.Event()
    failures: list[str] = []

    def write() -> None:
        n = 0
        victims = sorted(i for i in base if i.startswith("train/"))
        with httpx.Client(base_url=stack.api, timeout=120) as w:
            while not stop.is_set():
                seed = 20_000 + n
                r = w.post("/items", headers=ADMIN, data={"ids": f"race/{n:04d}.png"},
                           files=[("files", ("r.png", picture(seed), "image/png"))])
                if r.status_code != 201:
                    failures.append(f"add {r.status_code} {r.text[:200]}")
                else:
                    added[f"race/{n:04d}.png"] = seed
                if n < len(victims) and n % 3 == 0:
                    victim = victims[n]
                    r = w.delete(f"/items/{victim}", headers=ADMIN)
                    if r.status_code == 200:
                        deleted.add(victim)
                    elif r.status_code != 404:
                        failures.append(f"delete {r.status_code} {r.text[:200]}")
                n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        new = _train(c, seed=5)
        _serving(c, new)
    finally:
        stop.set()
        writer.join(60)
    assert failures == []
    assert len(added) >= 5
    wait_for(lambda: _count(c, "race/") == len(added), 30, "the last adds")
    items = {i["id"] for i in c.get(f"/models/{new}/items",
                                    params={"limit": 10_000}).json()["data"]}
    assert items == (base - deleted) | set(added)
    # Every added vector is the new encoder's: the same picture embedded by the new model
    # finds it at similarity 1.
    seeds = list(added.values())
    files_ids = list(added)
    for start in range(0, len(seeds), 64):
        chunk = seeds[start:start + 64]
        files = [("files", (f"{n}.png", picture(n), "image/png")) for n in chunk]
        r = c.post("/search", files=files, data={"k": "1"})
        assert r.headers["x-model-version"] == new
        for item_id, result in zip(files_ids[start:start + 64], r.json()["results"],
                                   strict=True):
            top = result["neighbours"][0]
            assert top["id"] == item_id and top["score"] > 0.999, (item_id, top)


def test_the_command_line_adds_finds_and_deletes(stack, tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for n in range(3):
        (folder / f"s{n}.png").write_bytes(picture(30_000 + n))
    env = {**stack.env, "AND_API_URL": stack.api}

    def cli(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "service.client", *args], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "added 3 items" in cli("add", *map(str, sorted(folder.iterdir())),
                                  "--prefix", "cli/", "--label", "shot")
    # The file just added finds itself. (Finding altered copies is the model's part, checked
    # over 200 items above; here the served model is whichever the earlier tests published.)
    found = cli("find", str(folder / "s1.png"), "-k", "1").split()
    assert found[1] == "cli/s1.png" and float(found[0]) > 0.999, found
    assert '"label": "shot"' in cli("get", "cli/s1.png")
    assert "deleted 3 items" in cli("delete", "cli/s0.png", "cli/s1.png", "cli/s2.png")
    r = subprocess.run([sys.executable, "-m", "service.client", "get", "cli/s1.png"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "404" in r.stderr


def _shapes_zip() -> bytes:
    """A second dataset, nothing like the CIFAR slice: 2 classes of 40 drawn pictures."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n in range(80):
            z.writestr(f"{'ab'[n % 2]}/{n:03d}.png", picture(50_000 + n))
    return out.getvalue()


def test_two_collections_trained_on_different_data_are_served_at_once(stack):
    c = httpx.Client(base_url=stack.api, timeout=120)
    slice_before = c.get("/collections/slice").json()
    r = c.post("/datasets", data={"name": "shapes"}, files={"file": ("s.zip", _shapes_zip())},
               headers=ADMIN)
    assert r.status_code == 201, r.text
    shapes = _train(c, dataset="shapes")
    # Publishing into `shapes` moved its own pointer only: `slice` serves what it served.
    listed = {d["name"]: d for d in c.get("/collections").json()["data"]}
    assert listed["shapes"]["current_version"] == shapes
    assert listed["slice"]["current_version"] == slice_before["current_version"]
    # An item `slice` still holds (the racing test above deletes some of its files' items).
    some = c.get(f"/models/{slice_before['current_version']}/items",
                 params={"limit": 1, "prefix": "train/"}).json()["data"][0]["id"]
    r = c.get(f"/neighbours/{some}")
    assert r.status_code == 200, r.text
    assert r.headers["x-model-version"] == slice_before["current_version"]
    # Queries stay inside their collection, by id and by image.
    item = "a/000.png"
    r = c.get(f"/collections/shapes/neighbours/{item}", params={"k": 20})
    assert r.status_code == 200 and r.json()["model_version"] == shapes
    assert all(n["id"][:2] in ("a/", "b/") for n in r.json()["neighbours"])
    assert c.get(f"/collections/slice/neighbours/{item}").status_code == 404
    files = [("files", ("q.png", picture(50_000), "image/png"))]
    for name, inside in (("shapes", True), ("slice", False)):
        r = c.post(f"/collections/{name}/search", files=files, data={"k": "5"})
        assert r.status_code == 200, r.text
        found = [n["id"][:2] in ("a/", "b/") for n in r.json()["results"][0]["neighbours"]]
        assert found == [inside] * 5, r.json()
    # Items added to one collection are in it alone.
    r = c.post("/collections/shapes/items", files=[("files", ("x.png", picture(60_001),
                                                              "image/png"))],
               data={"prefix": "added/", "label": "a"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["dataset"] == "shapes"
    assert c.get("/collections/shapes/items/added/x.png").status_code == 200
    assert c.get("/collections/slice/items/added/x.png").status_code == 404
    after = c.get("/collections/slice").json()
    assert (after["current_version"], after["item_count"]) == (
        slice_before["current_version"], slice_before["item_count"])
    assert c.get("/collections/shapes").json()["item_count"] == 81
    # A rollback in one collection leaves the other alone.
    if slice_before["previous_version"] is not None:
        r = c.post("/collections/slice/models/current/rollback", headers=ADMIN)
        assert r.status_code == 200 and r.json()["version"] == slice_before["previous_version"]
        assert c.get("/collections/shapes").json()["current_version"] == shapes
        r = c.post(f"/collections/slice/models/{slice_before['current_version']}/promote",
                   headers=ADMIN)
        assert r.status_code == 200, r.text
