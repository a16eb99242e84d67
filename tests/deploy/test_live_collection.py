"""The live collection through the real processes (API and worker, on Redis and on the embedded
default), over HTTP only: adds found at once, deletes never seen again, both kept across an API
restart and a kill -9 in the middle of a bulk add, replicas converging, and a training job whose
publish and swap race with adds and deletes."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import threading
import time
import zipfile

import httpx

from tests.deploy.live_stack import ADMIN, POLL_S, picture, serving, train
from tests.deploy.test_e2e import assert_weighted_vote
from tests.processes import wait_for


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


def test_added_items_are_found_deleted_ones_never_again_across_a_restart(live_stack):
    c = httpx.Client(base_url=live_stack.api, timeout=120)
    seeds = list(range(1000, 1200))
    for start in range(0, 200, 64):  # 200 images, in requests of at most 64
        r = _add(c, "added/", seeds[start:start + 64])
        assert r.status_code == 201, r.text
        assert r.json()["model_version"] == live_stack.version
    ids = [f"added/{n:04d}.png" for n in seeds]
    assert _count(c, "added/") == 200
    # Each is found at once, as the top neighbour of its slightly altered copy.
    assert [h[0] for h in _top_hits(c, seeds)] == ids
    item = c.get(f"/items/{ids[0]}").json()
    assert item["label"] == "shape" and item["added_with"] == live_stack.version
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
    live_stack.kill_api(live_stack.api)
    live_stack.api = live_stack.start_api()
    c = httpx.Client(base_url=live_stack.api, timeout=120)
    serving(c, live_stack.version)
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


def test_a_bulk_add_killed_midway_is_entirely_in_or_entirely_out(live_stack, tmp_path):
    """Killed with the upload half sent (held there), then twice while the add is under way
    or just done (after a delay): each add is all there or not at all, and one was surely
    cut mid-upload."""
    c = httpx.Client(base_url=live_stack.api, timeout=120)
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
                    f"{live_stack.api}/items", headers=ADMIN, timeout=120,
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
        live_stack.kill_api(live_stack.api)
        archive.go.set()
        sender.join(60)
        assert not sender.is_alive()
        live_stack.api = live_stack.start_api()
        c = httpx.Client(base_url=live_stack.api, timeout=120)
        serving(c, live_stack.version)
        count = _count(c, prefix)
        assert count in (0, 300), (prefix, count)
        outcomes.append((answer[0] if answer else None, count))
    # Half an upload adds nothing; an add that was answered is all there.
    assert outcomes[0] == (None, 0), outcomes
    assert all(count == 300 for status, count in outcomes if status is not None), outcomes
    assert all(status in (None, 201) for status, _ in outcomes), outcomes
    assert c.get("/readyz").status_code == 200


def test_replicas_converge_through_the_store(live_stack):
    """Two API processes on one store (Redis; or, on one machine, the embedded SQLite file)."""
    other = live_stack.start_api()
    a = httpx.Client(base_url=live_stack.api, timeout=60)
    b = httpx.Client(base_url=other, timeout=60)
    serving(b, live_stack.version)
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


def test_changes_racing_a_publish_and_swap_end_in_the_new_model(live_stack):
    c = httpx.Client(base_url=live_stack.api, timeout=120)
    base = {i["id"] for i in c.get(f"/models/{live_stack.version}/items",
                                   params={"limit": 10_000}).json()["data"]}
    added: dict[str, int] = {}
    deleted: set[str] = set()
    stop = threading.Event()
    failures: list[str] = []

    def write() -> None:
        n = 0
        victims = sorted(i for i in base if i.startswith("train/"))
        with httpx.Client(base_url=live_stack.api, timeout=120) as w:
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
        new = train(c, seed=5)
        serving(c, new)
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


def test_the_command_line_adds_finds_and_deletes(live_stack, tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for n in range(3):
        (folder / f"s{n}.png").write_bytes(picture(30_000 + n))
    env = {**live_stack.env, "AND_API_URL": live_stack.api}

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
