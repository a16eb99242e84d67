"""Query limits: a JSON body is refused by its size before it costs anything, huge integers and
deep nesting are 4xx, an image is refused by its header before it is decoded, decoding goes to
threads by pixel count and at most DECODE_CONCURRENCY at once, and the embedding queue is
bounded by images."""

from __future__ import annotations

import base64
import io
import threading
import time
import zipfile

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.errors import PROBLEM
from tests.conftest import CIFAR_SLICE
from tests.processes import wait_for
from tests.service.api_process import ApiProcess
from tests.service.conftest import ADMIN, make_settings
from trainer.images import ACCEPTED, AVIF, HEIF

HUGE = "1" * 5000  # past Python's 4,300-digit limit for int(str)
JSON_TYPE = "application/json"
DEEP = "[" * 100_000 + "]" * 100_000


def _png(width: int, height: int, mode: str = "1") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _jpeg() -> bytes:
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        return z.read("cifar10/test/cat/0001.jpg")


def _problem(r, status: int) -> dict:
    assert r.status_code == status, r.text[:2000]
    assert r.headers["content-type"].startswith(PROBLEM)
    return r.json()


@pytest.fixture(scope="module")
def server(tmp_path_factory, models_template):
    api = ApiProcess(tmp_path_factory.mktemp("limits"), models_template, dataset=False)
    yield api
    api.stop()


@pytest.fixture()
def app_client(tmp_path, models_template):
    def make(**overrides):
        app = create_app(make_settings(tmp_path, models_template, read_api_key=None,
                                       **overrides), enqueue=lambda j: None)
        return app, TestClient(app)

    return make


# --- JSON bodies ---------------------------------------------------------------------------

def test_a_huge_vectors_body_is_refused_unparsed_while_healthz_answers(server):
    """A million zeros (2 MB) used to cost 14.6 s of event loop, 85 MB of answer and 161 MB
    of memory."""
    body = b'{"vectors": [' + b",".join([b"0"] * 1_000_000) + b"]}"
    latencies: list[float] = []
    statuses: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def poll() -> None:
        # Whatever goes wrong here is collected and asserted below: an assertion in this
        # thread would only end the thread.
        try:
            with server.client(None, timeout=60) as c:
                while not stop.is_set():
                    start = time.perf_counter()
                    statuses.append(c.get("/healthz").status_code)
                    latencies.append(time.perf_counter() - start)
                    time.sleep(0.02)
        except BaseException as exc:
            errors.append(exc)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        with server.client(timeout=120) as c:
            for _ in range(3):
                r = c.post("/search", content=body, headers={"content-type": JSON_TYPE})
                detail = _problem(r, 413)["detail"]
                assert "besides images" in detail and len(r.content) < 2048
    finally:
        stop.set()
        poller.join(60)
    assert not errors and not poller.is_alive(), errors
    assert statuses and set(statuses) == {200}, statuses
    # A generous bound: the defect held the loop for many seconds per request.
    assert max(latencies) < 5, max(latencies)


def test_validation_errors_are_listed_at_most_twenty_with_their_count(app_client):
    _, client = app_client()
    with client:
        r = client.post("/embed", json={"images": [0] * 64})
        body = _problem(r, 422)
        assert len(body["errors"]) == 20 and body["error_count"] == 64
        # 200,000 of them (400 KB) are refused by size, before parsing: one short problem.
        r = client.post("/embed", content=b'{"images": [' + b",".join([b"0"] * 200_000) + b"]}",
                        headers={"content-type": JSON_TYPE})
        assert _problem(r, 413) and len(r.content) < 2048


def _with(template: str, value: str) -> str:
    return template.replace("@", value)


JSON_CASES = [
    ("/embed", _with('{"images": [@]}', HUGE)),
    ("/search", _with('{"vectors": [[@]], "k": 3}', HUGE)),
    ("/search", '{"vectors": [[1e999]]}'),
    ("/search", '{"vectors": [[NaN]]}'),
    ("/search", _with('{"k": -@, "vectors": [[1]]}', HUGE)),
    ("/classify", _with('{"ids": ["train/cat/0000.jpg"], "k": @}', HUGE)),
    ("/classify", _with('{"ids": ["train/cat/0000.jpg"], "sigma": @}', HUGE)),
    ("/train", _with('{"dataset": "x", "config": {"seed": @}}', HUGE)),
    ("/train", _with('{"dataset": "x", "config": {"lr": 1@}}', "0" * 400)),
    ("/datasets", _with('{"name": @}', HUGE)),
] + [(path, DEEP) for path in ("/embed", "/search", "/classify", "/train", "/datasets")] + [
    (path, _with('{"a": @}', DEEP)) for path in ("/search", "/train")]


@pytest.mark.parametrize(("path", "body"), JSON_CASES,
                         ids=[f"{p} {b[:24]}" for p, b in JSON_CASES])
def test_huge_integers_and_deep_nesting_are_a_4xx_problem(app_client, path, body):
    _, client = app_client()
    with client:
        r = client.post(path, content=body.encode(), headers={
            "content-type": JSON_TYPE, "Authorization": f"Bearer {ADMIN}"})
    assert 400 <= r.status_code < 500 and r.status_code != 401, r.text[:500]
    assert r.headers["content-type"].startswith(PROBLEM)
    assert "Traceback" not in r.text


@pytest.mark.parametrize("url", [f"/neighbours/train/cat/0000.jpg?k={HUGE}",
                                 f"/jobs?offset={HUGE}", f"/models/x/items?limit=-{HUGE}"])
def test_huge_integers_in_queries_are_422(app_client, url):
    _, client = app_client()
    with client:
        _problem(client.get(url), 422)


@pytest.mark.parametrize("field", ["k", "sigma"])
def test_huge_numbers_in_forms_are_422(app_client, field):
    _, client = app_client()
    with client:
        r = client.post("/classify", files=[("files", ("a.jpg", _jpeg(), "image/jpeg"))],
                        data={field: HUGE})
        _problem(r, 422)


# --- images --------------------------------------------------------------------------------

def test_a_decompression_bomb_is_refused_from_its_header(app_client):
    """9,912 bytes of 1-bit PNG that decode to 9,000 x 9,000 (243 MB as RGB) used to be
    embedded; eight of them in one /classify request added 369 MB to the API."""
    bomb = _png(9000, 9000)
    assert len(bomb) < 20_000
    _, client = app_client()
    with client:
        r = client.post("/embed", files=[("files", ("b.png", bomb, "image/png"))])
        assert "MAX_QUERY_PIXELS" in _problem(r, 422)["detail"]
        r = client.post("/classify", files=[("files", ("b.png", bomb, "image/png"))] * 8)
        assert "9000x9000" in _problem(r, 422)["detail"]
        r = client.post("/embed", json={"images": [base64.b64encode(bomb).decode()]})
        _problem(r, 422)
        # A 24-megapixel photo decoded whole (5712 x 4284, a phone's HEIC) is below the limit.
        r = client.post("/embed", files=[("files", ("p.png", _png(5712, 4284, "L"),
                                                    "image/png"))])
        assert r.status_code == 200, r.text


def test_a_phone_photo_as_a_jpeg_is_decoded_at_a_reduced_scale_and_accepted(app_client):
    """50 MP (8160 x 6120, a phone's full-resolution mode): a JPEG decodes at 1/8 of its
    size for the model (0.8 MP), so MAX_QUERY_PIXELS (25 MP) holds for those pixels and the
    photo is accepted; the same pixels as a PNG would decode whole and are refused."""
    photo = io.BytesIO()
    Image.open(io.BytesIO(_jpeg())).resize((8160, 6120)).save(photo, "JPEG", quality=85)
    _, client = app_client()
    with client:
        r = client.post("/embed", files=[("files", ("p.jpg", photo.getvalue(), "image/jpeg"))])
        assert r.status_code == 200, r.text
        # A header that declares more than Pillow's own bomb limit is still refused.
        huge = bytearray(photo.getvalue())
        sof = huge.index(b"\xff\xc0")  # baseline frame: length(2) precision(1) height width
        huge[sof + 5:sof + 9] = (40000).to_bytes(2, "big") + (40000).to_bytes(2, "big")
        r = client.post("/embed", files=[("files", ("h.jpg", bytes(huge), "image/jpeg"))])
        assert "not a readable image" in _problem(r, 422)["detail"]
        r = client.post("/embed", files=[("files", ("p.png", _png(8160, 6120), "image/png"))])
        assert "MAX_QUERY_PIXELS" in _problem(r, 422)["detail"]


def test_only_the_formats_the_readme_lists_are_decoded(app_client):
    pcx = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(pcx, "PCX")
    _, client = app_client()
    with client:
        r = client.post("/embed", files=[("files", ("a.pcx", pcx.getvalue(), "image/x-pcx"))])
        assert f"accepted: {ACCEPTED}" in _problem(r, 422)["detail"]
        for fmt in ("PNG", "GIF", "BMP", "TIFF", "WEBP", *(("AVIF",) if AVIF else ()),
                    *(("HEIF",) if HEIF else ())):
            buf = io.BytesIO()
            Image.new("RGB", (40, 30), (10, 200, 10)).save(buf, fmt)
            r = client.post("/embed", files=[("files", (f"a.{fmt}", buf.getvalue(),
                                                        "image/png"))])
            assert r.status_code == 200, (fmt, r.text)


def test_decoding_goes_to_a_thread_by_pixels_not_bytes(app_client):
    app, client = app_client()
    with client:
        assert client.post("/embed", files=[("files", ("a.jpg", _jpeg(), "image/jpeg"))]
                           ).status_code == 200
        assert app.state.decoder.peak == 0  # a 32x32 JPEG decodes inline
        small_but_large = _png(2500, 2500)  # 6 MP in a few kilobytes
        assert len(small_but_large) < 16 * 1024
        r = client.post("/embed", files=[("files", ("a.png", small_but_large, "image/png"))])
        assert r.status_code == 200, r.text
        assert app.state.decoder.peak == 1


def test_concurrent_decodes_are_bounded(app_client):
    app, client = app_client(decode_concurrency=1)
    image = _png(1500, 1500, "L")
    statuses: list[int] = []
    with client:
        def one() -> None:
            r = client.post("/embed", files=[("files", ("a.png", image, "image/png"))] * 2)
            statuses.append(r.status_code)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert statuses == [200] * 6
    assert app.state.decoder.peak == 1


# --- the embedding queue -------------------------------------------------------------------

class _Held:
    """Occupies the inference thread until released (what a long batch does)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def embed_uint8(self, images: torch.Tensor) -> np.ndarray:
        self.release.wait(60)
        return np.zeros((images.shape[0], 2), np.float32)


def test_the_embedding_queue_is_bounded_by_images(app_client):
    app, client = app_client(embed_workers=1, embed_max_queued_images=4)
    held = _Held()
    image = [("files", ("a.jpg", _jpeg(), "image/jpeg"))]
    with client:
        # Never hang if the bound is missing: the held batch is released after a while.
        timer = threading.Timer(20, held.release.set)
        timer.start()
        waiting = client.portal.start_task_soon(
            app.state.batcher.embed, held, torch.zeros(4, 3, 2, 2, dtype=torch.uint8))
        wait_for(lambda: app.state.batcher.pending_images >= 4, 10, "the held batch")
        r = client.post("/embed", files=image)
        body = _problem(r, 503)
        assert r.headers["retry-after"] and "images are waiting" in body["detail"]
        held.release.set()
        timer.cancel()
        waiting.result(30)
        assert client.post("/embed", files=image).status_code == 200
        # A request larger than the bound still runs when nothing else waits.
        assert client.post("/embed", files=image * 6).status_code == 200
