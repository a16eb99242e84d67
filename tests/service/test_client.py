"""service.client: Client and AsyncClient against the real API process (a published model,
its dataset as a folder, read and admin keys), its command line, and its retries against a
small scripted HTTP server that answers 503 with Retry-After or drops a connection."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import io
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from service import collection_schemas, item_schemas, schemas
from service.client import (
    ApiError,
    AsyncClient,
    Client,
    Health,
    ItemsChanged,
    Job,
    Retry,
    results,
)
from service.client.core import Call, retry_after
from tests.conftest import CIFAR_SLICE
from tests.processes import REPO
from tests.service.api_process import READ, ApiProcess
from tests.service.conftest import ADMIN, V1, V2

TINY = {"backbone": "small_cnn", "rounds": 1, "epochs_per_round": 1, "batch_size": 32,
        "knn_k": 10, "num_workers": 0}


def picture(seed: int) -> bytes:
    """A distinct 32x32 PNG: coloured shapes on a coloured ground."""
    rng = random.Random(seed)
    image = Image.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.randrange(24), rng.randrange(24)
        draw.rectangle((x, y, x + rng.randrange(4, 14), y + rng.randrange(4, 14)),
                       fill=tuple(rng.randrange(256) for _ in range(3)))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def api(tmp_path_factory, models_template):
    server = ApiProcess(tmp_path_factory.mktemp("client"), models_template,
                        dataset_name="cifar-slice")
    yield server
    server.stop()


@pytest.fixture()
def shots(tmp_path) -> list[Path]:
    paths = []
    for n in range(5):
        paths.append(tmp_path / f"s{n}.png")
        paths[-1].write_bytes(picture(1000 + n))
    return paths


# --- typed results and a light import -----------------------------------------------------------

MIRRORS = [(results.Health, schemas.Health), (results.Dataset, schemas.DatasetPublic),
           (results.Job, schemas.JobPublic), (results.JobProgress, schemas.JobProgress),
           (results.Embeddings, schemas.EmbedResponse), (results.Neighbour, schemas.Neighbour),
           (results.Neighbours, schemas.NeighboursResponse),
           (results.SearchResult, schemas.SearchResult), (results.Search, schemas.SearchResponse),
           (results.Prediction, schemas.Prediction),
           (results.Classification, schemas.ClassifyResponse),
           (results.ModelSummary, schemas.ModelSummary), (results.Models, schemas.ModelsPublic),
           (results.Item, schemas.Item), (results.ItemDetail, item_schemas.ItemPublic),
           (results.ItemsChanged, item_schemas.ItemsChanged),
           (results.Collection, collection_schemas.CollectionPublic),
           (results.Collections, collection_schemas.CollectionsPublic)]


@pytest.mark.parametrize(("mine", "theirs"), MIRRORS, ids=lambda c: c.__name__)
def test_each_result_has_its_response_schemas_fields_in_order(mine, theirs):
    assert [f.name for f in dataclasses.fields(mine)] == list(theirs.model_fields)


def test_importing_the_client_loads_neither_the_server_nor_torch():
    code = ("import sys, service.client; print(sorted(m for m in sys.modules if m.split('.')[0]"
            " in ('torch', 'fastapi', 'starlette', 'pydantic', 'numpy', 'asyncio', 'trainer',"
            " 'state', 'worker', 'live') or m in ('service.app', 'service.schemas')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


# --- the blocking client through the real API -------------------------------------------------

def test_the_blocking_client_covers_the_api(api, shots, tmp_path):
    with Client(api.url, admin_key=ADMIN, read_key=READ, batch=2) as c:
        assert c.health() == Health("ok", {})
        assert c.ready().checks["model"] == V1
        assert {d.name for d in c.datasets()} == {"cifar-slice"}
        assert c.dataset("cifar-slice").items == 120
        uploaded = c.upload_dataset("uploaded", CIFAR_SLICE)
        assert (uploaded.name, uploaded.items, uploaded.labelled) == ("uploaded", 120, True)
        assert c.register_dataset("again", "uploaded").classes == uploaded.classes
        # A folder is sent as a zip of its files; its class folders are the classes.
        folder = tmp_path / "my shots"
        for n, shot in enumerate(shots):
            (folder / f"clé {n % 2}").mkdir(parents=True, exist_ok=True)
            (folder / f"clé {n % 2}" / shot.name).write_bytes(shot.read_bytes())
        (folder / "clé 0" / "link.png").symlink_to(shots[0])  # a link: left out
        from_folder = c.upload_dataset("from-folder", folder)
        assert (from_folder.items, from_folder.classes) == (5, ["clé 0", "clé 1"])

        models = c.models()
        assert (models.current, [m.version for m in models.data]) == (V1, [V2, V1])
        assert c.model(V1)["version"] == V1

        vectors = c.embed([shots[0], shots[1].read_bytes(), shots[2]])
        assert vectors.array().shape == (3, vectors.dim) and vectors.model_version == V1

        added = c.add_items(shots, prefix="client/", label="shot")
        assert added.ids == [f"client/s{n}.png" for n in range(5)]  # three requests of 2
        detail = c.item("client/s3.png")
        assert (detail.label, detail.added_with, detail.dataset) == ("shot", V1, "cifar-slice")
        found = c.search(shots[1:3], k=1)
        assert [r.neighbours[0].id for r in found.results] == ["client/s1.png", "client/s2.png"]
        top = c.search_vectors(vectors.array(), k=1).results  # a numpy array of queries
        assert [(r.neighbours[0].id, r.neighbours[0].score > 0.999) for r in top] == [
            (f"client/s{n}.png", True) for n in range(3)]
        assert "client/s1.png" not in [n.id for n in c.neighbours("client/s1.png", k=3)
                                       .neighbours]
        # Filtered: by label (one, or several) and id prefix, in every query form.
        found = c.search(shots[1:3], k=3, labels=["shot"], prefix="client/s")
        assert all(n.id.startswith("client/s") for r in found.results for n in r.neighbours)
        assert [len(r.neighbours) for r in found.results] == [3, 3]
        assert [n.label for n in c.search_vectors(vectors.array()[:1], k=20, labels="shot")
                .results[0].neighbours] == ["shot"] * 5
        assert {n.id for n in c.neighbours("client/s1.png", k=9, prefix="client/")
                .neighbours} == {f"client/s{n}.png" for n in (0, 2, 3, 4)}
        assert c.neighbours("client/s1.png", labels=["nope"]).neighbours == []
        assert c.classify([shots[4]], k=5, labels=["shot"]).predictions[0].label == "shot"
        assert c.classify_items(["train/cat/0000.jpg"], k=5, labels=["ship", "shot"],
                                prefix="client/").predictions[0].label == "shot"
        votes = c.classify([shots[4], shots[3]], k=5).predictions
        assert len(votes) == 2 and votes[0].label in [*uploaded.classes, "shot"]
        assert c.classify_items(["client/s4.png"], k=5).predictions[0].id == "client/s4.png"
        assert c.image("client/s0.png") == shots[0].read_bytes()
        assert c.thumbnail("client/s0.png", size=16)[8:12] == b"WEBP"

        with pytest.raises(ApiError) as taken:
            c.add_items([shots[0]], prefix="client/")
        assert (taken.value.status, taken.value.title) == (409, "Conflict")
        assert "already exists" in (taken.value.detail or "")
        replaced = c.add_items([shots[0].read_bytes()], ids=["client/s0.png"], upsert=True)
        assert replaced.seq == added.seq + 1

        count = httpx.get(f"{api.url}/models/{V1}/items", params={"limit": 1},
                          headers={"Authorization": f"Bearer {READ}"}).json()["count"]
        listed = [i.id for i in c.items(page_size=7)]  # pages of 7, past 120 items
        assert len(listed) == len(set(listed)) == count == 125
        # In index order: the item replaced last.
        assert [i.id for i in c.items(V1, prefix="client/", page_size=2)] == [
            *added.ids[1:], added.ids[0]]
        assert {i.label for i in c.items(label="shot")} == {"shot"}

        assert c.delete_items(added.ids).ids == added.ids
        with pytest.raises(ApiError) as gone:
            c.item("client/s3.png")
        assert gone.value.status == 404 and gone.value.type == "about:blank"

        job = c.train("cifar-slice", TINY, promote="never")
        assert (job.status, job.dataset, job.promote) == ("queued", "cifar-slice", "never")
        assert job.id in [j.id for j in c.jobs(status="queued", page_size=1)]
        with pytest.raises(TimeoutError):
            c.wait_for_job(job.id, timeout_s=0.3, poll_s=0.1)
        assert c.cancel_job(job.id).status == "canceled"
        ended = c.wait_for_job(job.id, poll_s=0.1)
        assert ended.ended and ended.status == "canceled"
        assert c.job_progress(job.id).epochs == []

        assert c.promote(V2).current and c.models().current == V2
        assert c.rollback().version == V1


def test_a_change_is_refused_without_the_admin_key(api, shots):
    with Client(api.url, admin_key="", read_key=READ) as c, pytest.raises(ApiError) as refused:
        c.add_items([shots[0]], prefix="nokey/")
    assert refused.value.status == 401


# --- the async client through the real API ----------------------------------------------------

def test_the_async_client_covers_the_api(api, shots):
    async def main() -> None:
        async with AsyncClient(api.url, admin_key=ADMIN, read_key=READ, batch=2) as c:
            assert (await c.ready()).status == "ready"
            vectors = await c.embed(shots[:3])
            assert vectors.array().shape == (3, vectors.dim)
            images = [s.read_bytes() for s in shots]
            ids = [f"async/{n}.png" for n in range(5)]
            added = await c.add_items(images, ids=ids, labels=["a", "b", "a", "b", "a"])
            assert added.ids == ids
            pages = [b.ids async for b in c.add_batches(images[:3], ids=ids[:3], upsert=True)]
            assert pages == [ids[:2], ids[2:3]]
            assert [i.id async for i in c.items(prefix="async/", page_size=2)] == [
                *ids[3:], *ids[:3]]  # in index order: the ones replaced last
            assert (await c.item("async/3.png")).label == "b"  # the others replaced, unlabelled
            found = await c.search([shots[2]], k=1)
            assert found.results[0].neighbours[0].id == "async/2.png"
            found = await c.search([shots[2]], k=5, labels=["b"], prefix="async/")
            assert [n.id for n in found.results[0].neighbours] == ["async/3.png"]
            # Concurrent queries on one client.
            answers = await asyncio.gather(*(c.neighbours(i, k=2) for i in ids))
            assert [a.id for a in answers] == ids
            assert (await c.delete_items(ids)).ids == ids
            job = await c.train("cifar-slice", TINY)
            await c.cancel_job(job.id)
            assert (await c.wait_for_job(job.id, poll_s=0.1)).status == "canceled"
            assert job.id in [j.id async for j in c.jobs(page_size=1)]

    asyncio.run(main())


# --- the command line ----------------------------------------------------------------------------

def test_the_command_line_adds_finds_lists_gets_and_deletes(api, shots):
    env = {**os.environ, "AND_API_URL": api.url, "ADMIN_API_KEY": ADMIN, "READ_API_KEY": READ,
           "PYTHONPATH": str(REPO)}

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-m", "service.client", *args], env=env,
                           capture_output=True, text=True, timeout=120)
        assert (r.returncode == 0) == ok, r.stdout + r.stderr
        return r

    out = cli("add", *map(str, shots[:3]), "--prefix", "cli/", "--label", "shot").stdout
    assert out.startswith("added 3 items to cifar-slice (model 20260101-000000-first, log "
                          "position "), out
    found = cli("find", str(shots[1]), "-k", "1").stdout.split()
    assert found[1] == "cli/s1.png" and float(found[0]) > 0.999 and found[2] == "(shot)"
    lines = cli("find", str(shots[1]), "-k", "9", "--label", "shot", "--label", "cat",
                "--prefix", "cli/s").stdout.splitlines()
    assert sorted(line.split()[1] for line in lines) == ["cli/s0.png", "cli/s1.png",
                                                         "cli/s2.png"]
    # The same through the collection's own routes, by name.
    scoped = cli("--collection", "cifar-slice", "find", str(shots[1]), "-k", "1").stdout.split()
    assert scoped[1] == "cli/s1.png"
    assert cli("--collection", "nowhere", "find", str(shots[1]), ok=False).stderr.startswith(
        "error: 404")
    shown = json.loads(cli("get", "cli/s1.png").stdout)
    assert list(shown) == list(item_schemas.ItemPublic.model_fields) and shown["label"] == "shot"
    assert cli("delete", "cli/s0.png", "cli/s1.png", "cli/s2.png").stdout.startswith(
        "deleted 3 items (log position ")
    missing = cli("get", "cli/s1.png", ok=False)
    assert missing.stderr.startswith("error: 404 no item 'cli/s1.png'"), missing.stderr
    # A file that is not there, or a folder given to find: a one-line error, no traceback.
    for command in (("find", "no-such.png"), ("add", "no-such.png", "--prefix", "cli/"),
                    ("find", str(shots[0].parent))):
        refused = cli(*command, ok=False).stderr
        assert refused.startswith("error: cannot read ") and "Traceback" not in refused, refused
    # A folder to add is one archive of its files: ids are the prefix + the path below it.
    folder = shots[0].parent.parent / "a folder"
    (folder / "sub dir").mkdir(parents=True)
    for n, shot in enumerate(shots[:3]):
        (folder / ("sub dir" if n else "") / shot.name).write_bytes(shot.read_bytes())
    (folder / ".DS_Store").write_bytes(b"clutter")
    (folder / "été 日本.png").write_bytes(shots[0].read_bytes())
    out = cli("add", str(folder), "--prefix", "dir/").stdout
    assert out.startswith("added 4 items to cifar-slice"), out
    listed = cli("list", "--prefix", "dir/").stdout
    assert sorted(listed.splitlines()) == ["dir/s0.png\t", "dir/sub dir/s1.png\t",
                                           "dir/sub dir/s2.png\t", "dir/été 日本.png\t"]
    assert cli("list", "--prefix", "dir/", "--label", "shot").stdout == ""
    everything = cli("list").stdout.splitlines()
    assert len(everything) == 124 and "train/cat/0000.jpg\tcat" in everything
    # Into a reader that has gone (`list | head -1`): it stops quietly, no error, no traceback.
    read, write = os.pipe()
    os.close(read)
    try:
        r = subprocess.run([sys.executable, "-m", "service.client", "list"], env=env,
                           stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert json.loads(cli("get", "dir/sub dir/s1.png").stdout)["id"] == "dir/sub dir/s1.png"
    assert json.loads(cli("get", "dir/s0.png").stdout)["id"] == "dir/s0.png"
    # Shown as written, not as \u escapes.
    assert '"id": "dir/été 日本.png"' in cli("get", "dir/été 日本.png").stdout
    cli("delete", "dir/s0.png", "dir/sub dir/s1.png", "dir/sub dir/s2.png", "dir/été 日本.png")
    # A folder with unreadable files: nothing is added, and each one is named.
    broken = shots[0].parent.parent / "broken"
    broken.mkdir()
    (broken / "ok.png").write_bytes(shots[0].read_bytes())
    (broken / "empty.jpg").write_bytes(b"")
    (broken / "half.png").write_bytes(shots[0].read_bytes()[:40])
    said = cli("add", str(broken), "--prefix", "b/", ok=False).stderr
    assert said.startswith("error: 422 2 of the 3 images are not readable"), said
    assert "\n  b/empty.jpg: not a readable image" in said, said
    assert "\n  b/half.png: not a readable image" in said, said


def test_the_command_line_says_what_went_in_when_a_later_request_is_refused(api, tmp_path):
    """71 files are two requests (64 + 7, the API's limit per request); the second holds an
    unreadable file. The first request's 64 items stay added, and the command says so."""
    env = {**os.environ, "AND_API_URL": api.url, "ADMIN_API_KEY": ADMIN, "PYTHONPATH": str(REPO)}
    files = []
    for n in range(71):
        files.append(tmp_path / f"m{n:03d}.png")
        files[-1].write_bytes(b"not an image" if n == 66 else picture(3000 + n))
    r = subprocess.run([sys.executable, "-m", "service.client", "add", *map(str, files),
                        "--prefix", "many/"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("added 64 items to cifar-slice"), r.stdout
    assert r.stderr.startswith("error: 422 item 'many/m066.png': not a readable image"), r.stderr
    assert "64 items were added by the requests before this one; 7 of the 71 files were not" \
        in r.stderr, r.stderr
    with Client(api.url, admin_key=ADMIN) as client:
        assert client.item("many/m063.png").id == "many/m063.png"
        with pytest.raises(ApiError) as missing:
            client.item("many/m064.png")
        assert missing.value.status == 404
        client.delete_items([f"many/m{n:03d}.png" for n in range(64)])


# --- retries, against a scripted server ---------------------------------------------------------

class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next scripted answer: (status, headers, body), or None
    to close the connection without answering. Records what it was sent, and when."""

    script: ClassVar[deque[tuple[int, dict[str, str], bytes] | None]] = deque()
    seen: ClassVar[list[tuple[float, str, str, dict[str, str]]]] = []

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append((time.monotonic(), self.command, self.path, dict(self.headers)))
        answer = self.script.popleft()
        if answer is None:
            self.close_connection = True
            return
        status, headers, body = answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture()
def scripted():
    Scripted.script, Scripted.seen = deque(), []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", Scripted
    httpd.shutdown()
    httpd.server_close()


OK = (200, {"Content-Type": "application/json"}, b'{"status": "ok"}')
BUSY = (503, {"Content-Type": "application/problem+json", "Retry-After": "1"},
        b'{"type": "about:blank", "title": "Service Unavailable", "status": 503, '
        b'"detail": "the embedding queue is full", "instance": "/healthz"}')


@pytest.mark.parametrize("kind", ["blocking", "async"])
def test_a_503_is_sent_again_after_its_retry_after(scripted, kind):
    url, server = scripted
    server.script.extend([BUSY, OK])
    retry = Retry(backoff_s=0.01)
    if kind == "blocking":
        with Client(url, retry=retry) as c:
            answer = c.health()
    else:
        async def main() -> Health:
            async with AsyncClient(url, retry=retry) as c:
                return await c.health()
        answer = asyncio.run(main())
    assert answer == Health("ok", {})
    assert len(server.seen) == 2
    waited = server.seen[1][0] - server.seen[0][0]
    assert 1.0 <= waited < 1.8, waited


def test_retries_are_bounded_and_back_off_exponentially(scripted):
    url, server = scripted
    busy = (503, {"Content-Type": "application/problem+json"}, BUSY[2])
    server.script.extend([busy] * 4)
    with Client(url, retry=Retry(attempts=4, backoff_s=0.1, jitter=0)) as c, \
            pytest.raises(ApiError) as failed:
        c.health()
    error = failed.value
    assert (error.status, error.title, error.detail, error.type, error.instance) == (
        503, "Service Unavailable", "the embedding queue is full", "about:blank", "/healthz")
    times = [t for t, *_ in server.seen]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 4 and not server.script
    for gap, wait in zip(gaps, [0.1, 0.2, 0.4], strict=True):
        assert wait <= gap < wait + 0.3, gaps


def test_a_retry_after_past_the_longest_wait_is_not_waited_for(scripted):
    url, server = scripted
    server.script.extend([(503, {"Retry-After": "3600"}, b"busy"), OK])
    with Client(url, retry=Retry(max_wait_s=60)) as c, pytest.raises(ApiError) as failed:
        c.health()
    assert (failed.value.status, failed.value.title, failed.value.detail) == (
        503, "Service Unavailable", "busy")
    assert len(server.seen) == 1


def test_a_lost_reply_is_sent_again_only_where_that_is_safe(scripted):
    url, server = scripted
    changed = json.dumps({"model_version": V1, "dataset": "d", "ids": ["x/a.png"],
                          "seq": 7}).encode()
    retry = Retry(backoff_s=0.01)
    with Client(url, admin_key="k", retry=retry) as c:
        server.script.extend([None, (201, {"Content-Type": "application/json"}, changed)])
        assert c.add_items([picture(1)], ids=["x/a.png"]) == ItemsChanged(V1, "d",
                                                                          ["x/a.png"], 7)
        keys = [headers["Idempotency-Key"] for *_, headers in server.seen]
        assert len(keys) == 2 and keys[0] == keys[1] and len(keys[0]) == 32
        server.script.extend([None, (200, {"Content-Type": "application/json"}, changed)])
        assert c.delete_items("x/a.png").seq == 7
        keys = [headers["Idempotency-Key"] for *_, headers in server.seen[2:]]
        assert len(keys) == 2 and keys[0] == keys[1]
        server.script.extend([None, OK])
        assert c.health().status == "ok"  # a read
        assert len(server.seen) == 6
        server.script.extend([None, OK])  # a second job is not harmless: not sent again
        with pytest.raises(httpx.RemoteProtocolError):
            c.train("d")
        assert len(server.seen) == 7


def test_a_request_that_never_left_is_tried_again_whatever_it_is():
    retry = Retry(attempts=3, backoff_s=0.05, jitter=0)
    started = time.monotonic()
    with Client("http://127.0.0.1:9", retry=retry) as c, pytest.raises(httpx.ConnectError):
        c.train("d")  # nothing listens on port 9: refused, three times
    assert time.monotonic() - started >= 0.15


# --- the retry policy's arithmetic ---------------------------------------------------------------

def _response(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


def test_retry_after_reads_seconds_and_http_dates():
    now = 1_700_000_000.0
    assert retry_after("120", now) == 120
    assert retry_after(" 0 ", now) == 0
    assert retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30
    assert retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0
    assert retry_after("soon", now) is None and retry_after(None, now) is None
    assert retry_after("-5", now) is None


def test_the_wait_doubles_up_to_its_cap_less_its_jitter():
    r = Retry(backoff_s=0.5, max_backoff_s=3, jitter=0.5, attempts=9, max_wait_s=10)
    assert [r.backoff(n, 0.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert r.backoff(3, 0.5) == 1.5 and r.backoff(1, 0.999) == pytest.approx(0.25, abs=1e-3)
    read, change = Call("GET", "/x", replayable=True), Call("POST", "/train")
    assert r.wait(read, 1, _response(503, **{"Retry-After": "2"}), 0.0, 0) == 2
    assert r.wait(read, 3, _response(503, **{"Retry-After": "1"}), 0.0, 0) == 2.0
    assert r.wait(change, 1, _response(503), 0.0, 0) == 0.5  # refused: it did nothing
    assert r.wait(read, 1, _response(503, **{"Retry-After": "11"}), 0.0, 0) is None
    assert r.wait(read, 9, _response(503), 0.0, 0) is None
    assert r.wait(read, 1, _response(500), 0.0, 0) is None
    assert r.wait(read, 1, _response(404), 0.0, 0) is None
    lost, refused = httpx.ReadError("lost"), httpx.ConnectError("refused")
    assert r.wait(read, 2, lost, 0.0, 0) == 1.0
    assert r.wait(change, 2, lost, 0.0, 0) is None
    assert r.wait(change, 2, refused, 0.0, 0) == 1.0
    probe = Call("GET", "/readyz", replayable=True, retry=False)
    assert r.wait(probe, 1, _response(503), 0.0, 0) is None


def test_bytes_need_ids_and_ids_match_the_images():
    with Client("http://127.0.0.1:9") as c:
        with pytest.raises(ValueError, match="give their ids"):
            c.add_items([b"png"], prefix="p/")
        with pytest.raises(ValueError, match="2 images but 1 ids"):
            c.add_items([b"a", b"b"], ids=["one"])


def test_embeddings_as_an_array():
    e = results.Embeddings("v", 2, [[1.0, 0.0], [0.5, 0.5]])
    assert e.array().dtype == np.float32 and e.array().tolist() == [[1.0, 0.0], [0.5, 0.5]]
    assert Job.of({**dict.fromkeys(f.name for f in dataclasses.fields(Job)),
                   "status": "failed", "extra": 1}).ended
