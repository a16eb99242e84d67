"""INFERENCE_ENGINE=onnxruntime through the real API: the routes that embed images answer as
with torch (the same vectors to about 1e-7), from the ONNX export the API made beside the
bundle's encoder.pt when it loaded the version."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from tests.conftest import CIFAR_SLICE
from tests.service.conftest import V1, V2, make_settings
from trainer.engines import OnnxEmbeddingModel


def _files(n: int = 24) -> list[tuple[str, bytes, str]]:
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        names = sorted(m for m in z.namelist() if m.endswith(".jpg"))
        return [(m.rsplit("/", 1)[-1], z.read(m), "image/jpeg")
                for m in names[:: max(1, len(names) // n)][:n]]


def _embed(client: TestClient, files, version: str = V1) -> np.ndarray:
    r = client.post(f"/embed?model_version={version}", files=[("files", f) for f in files])
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["embeddings"], dtype=np.float32)


def test_onnxruntime_serves_what_torch_serves(api, tmp_path, models_template):
    files = _files()
    by_torch = {v: _embed(api.client, files, v) for v in (V1, V2)}
    settings = make_settings(tmp_path / "ort", models_template, inference_engine="onnxruntime")
    assert not (settings.models_root / V1 / "encoder.onnx").exists()
    with TestClient(create_app(settings, enqueue=lambda j: None)) as client:
        served = client.app.state.collections.registry("cifar-slice").current
        assert isinstance(served.bundle.model, OnnxEmbeddingModel)
        assert (settings.models_root / V1 / "encoder.onnx").exists()  # made when loaded
        for version in (V1, V2):  # the current one and a pinned one
            got = _embed(client, files, version)
            cosine = (got * by_torch[version]).sum(axis=1)
            assert cosine.mean() >= 0.9999 and cosine.min() >= 0.9999, cosine
        # Searching and classifying by image run the same engine.
        r = client.post("/search", files=[("files", files[0])], data={"k": "5"})
        assert r.status_code == 200, r.text
        expected = api.client.post("/search", files=[("files", files[0])], data={"k": "5"})
        # (scores, not ids: two neighbours 1e-7 apart may swap places)
        assert np.allclose([n["score"] for n in r.json()["results"][0]["neighbours"]],
                           [n["score"] for n in expected.json()["results"][0]["neighbours"]],
                           atol=1e-4)
        r = client.post("/classify", files=[("files", files[1])])
        assert r.status_code == 200, r.text
        # The route serves the graph the engine runs: made once.
        graph = settings.models_root / V1 / "encoder.onnx"
        made = graph.stat().st_mtime_ns
        assert client.get(f"/models/{V1}/encoder.onnx").content == graph.read_bytes()
        assert graph.stat().st_mtime_ns == made


def test_an_unknown_engine_is_refused_at_start(tmp_path, models_template):
    with pytest.raises(ValidationError, match="inference_engine"):
        make_settings(tmp_path, models_template, inference_engine="tensorrt")
