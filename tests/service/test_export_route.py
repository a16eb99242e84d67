"""GET /models/{version}/encoder.onnx through the real API, and `python -m trainer export` of a
published bundle: onnxruntime running either graph on real image files gives what /embed
gives for the same files."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import onnxruntime as ort

from service.errors import PROBLEM
from tests.conftest import CIFAR_SLICE
from tests.service.conftest import V1, V2
from trainer.images import decode_square


def _files(n: int = 24) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        names = sorted(m for m in z.namelist() if m.endswith(".jpg"))
        return [(m, z.read(m)) for m in names[:: max(1, len(names) // n)][:n]]


def _embedded(client, files, version: str) -> np.ndarray:
    r = client.post(f"/embed?model_version={version}",
                    files=[("files", (name.rsplit("/", 1)[-1], blob, "image/jpeg"))
                           for name, blob in files])
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["embeddings"], dtype=np.float32)


def _run(graph: bytes | str, files, size: int) -> np.ndarray:
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    pixels = np.stack([decode_square(blob, size) for _, blob in files])
    return session.run(None, {"images": pixels})[0]


def _assert_parity(got: np.ndarray, served: np.ndarray) -> None:
    assert got.shape == served.shape
    cosine = (got * served).sum(axis=1)
    assert cosine.mean() >= 0.9999 and cosine.min() >= 0.9999, cosine


def test_the_onnx_graph_of_a_version_embeds_as_embed_does(api):
    c = api.client
    r = c.get(f"/models/{V2}/encoder.onnx.json")
    assert r.status_code == 200, r.text
    spec = r.json()
    assert spec["model_version"] == V2 and spec["dim"] == 128
    size = spec["image_size"]
    assert spec["input"]["shape"] == ["N", size, size, 3] and spec["input"]["dtype"] == "uint8"

    r = c.get(f"/models/{V2}/encoder.onnx")
    assert r.status_code == 200, r.text[:200]
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-model-version"] == V2
    assert f'filename="{V2}-encoder.onnx"' in r.headers["content-disposition"]
    files = _files()
    _assert_parity(_run(r.content, files, size), _embedded(c, files, V2))
    # The graph carries the same spec the JSON route gives.
    meta = ort.InferenceSession(r.content, providers=["CPUExecutionProvider"]).get_modelmeta()
    assert json.loads(meta.custom_metadata_map["and.encoder_spec"]) == spec


def test_the_export_is_made_once_per_version_and_kept_in_its_bundle(api):
    c = api.client
    graph = api.settings.models_root / V1 / "encoder.onnx"
    assert not graph.exists()
    first = c.get(f"/models/{V1}/encoder.onnx")
    assert first.status_code == 200
    made = graph.stat().st_mtime_ns
    again = c.get(f"/models/{V1}/encoder.onnx")
    assert again.content == first.content and graph.stat().st_mtime_ns == made
    assert c.get(f"/models/{V1}/encoder.onnx.json").json()["model_version"] == V1
    assert graph.stat().st_mtime_ns == made
    tag = first.headers["etag"]
    r = c.get(f"/models/{V1}/encoder.onnx", headers={"If-None-Match": tag})
    assert r.status_code == 304 and not r.content
    # Two versions, two graphs.
    other = c.get(f"/models/{V2}/encoder.onnx")
    assert other.status_code == 200 and other.content != first.content
    assert other.headers["etag"] != tag


def test_unknown_and_malformed_versions_are_problems(api):
    c = api.client
    for url in ("/models/20990101-000000-none/encoder.onnx",
                "/models/20990101-000000-none/encoder.onnx.json"):
        r = c.get(url)
        assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM), url
        assert "20990101-000000-none" in r.json()["detail"]
    r = c.get("/models/.hidden/encoder.onnx")
    assert r.status_code in (404, 422) and r.headers["content-type"].startswith(PROBLEM)
    assert not any(p.name.startswith(("encoder.onnx", ".encoder.onnx"))
                   for p in api.settings.models_root.rglob("*"))


def test_a_bundle_whose_encoder_cannot_be_read_is_a_conflict_not_an_error(api):
    (api.settings.models_root / V2 / "encoder.pt").write_bytes(b"not an encoder")
    r = api.client.get(f"/models/{V2}/encoder.onnx")
    assert r.status_code == 409 and r.headers["content-type"].startswith(PROBLEM)
    assert str(api.settings.models_root) not in r.text  # the reason is in the log only


def test_the_cli_exports_a_published_bundle(api, tmp_path):
    out = tmp_path / "exported"
    r = subprocess.run([sys.executable, "-m", "trainer", "export",
                        "--model", str(api.settings.models_root / V1), "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    spec = json.loads((out / "encoder.onnx.json").read_text())
    assert spec["model_version"] == V1 and spec["backbone"] == "small_cnn"
    files = _files(12)
    _assert_parity(_run(str(out / "encoder.onnx"), files, spec["image_size"]),
                   _embedded(api.client, files, V1))
