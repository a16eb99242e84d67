"""The ONNX export of every backbone, run by onnxruntime on real image files: the same unit
vectors as the torch encoder it came from, for any batch size."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.conftest import CIFAR_SLICE
from trainer.backbones import BUILDERS, Encoder
from trainer.encoder_file import EmbeddingModel, EncoderMeta, save_encoder
from trainer.errors import BundleError
from trainer.export import SPEC_FILE, SPEC_KEY, export
from trainer.images import decode_square

SIZE, DIM = 32, 16


def _files(n: int = 24) -> list[bytes]:
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        names = sorted(m for m in z.namelist() if m.endswith(".jpg"))
        return [z.read(m) for m in names[:: max(1, len(names) // n)][:n]]


def _untrained(tmp_path, backbone: str):
    """An untrained encoder saved by the real writer, with batch-norm statistics that are not
    the identity (a graph that dropped or misplaced them would not match)."""
    torch.manual_seed(0)
    encoder = Encoder(backbone, DIM)
    for m in encoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    folder = tmp_path / backbone
    folder.mkdir()
    save_encoder(folder / "encoder.pt", encoder,
                 EncoderMeta(backbone, DIM, SIZE, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)))
    return folder


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("backbone", sorted(BUILDERS))
def test_the_graph_embeds_real_images_as_the_encoder_does(tmp_path, backbone):
    folder = _untrained(tmp_path, backbone)
    path = export(folder, tmp_path / "out")
    session = _session(path)
    (given,), (taken,) = session.get_inputs(), session.get_outputs()
    assert (given.name, given.type, given.shape) == ("images", "tensor(uint8)",
                                                     ["N", SIZE, SIZE, 3])
    assert (taken.name, taken.type, taken.shape) == ("embeddings", "tensor(float)", ["N", DIM])

    blobs = _files()
    pixels = np.stack([decode_square(b, SIZE) for b in blobs])
    expected = EmbeddingModel.load(folder / "encoder.pt", "cpu", "fp32").embed_files(blobs)
    got = session.run(None, {"images": pixels})[0]
    assert got.shape == (len(blobs), DIM)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = (got * expected).sum(axis=1)
    assert cosine.mean() >= 0.9999 and cosine.min() >= 0.9999, cosine
    assert np.abs(got - expected).max() < 1e-4
    # The batch axis is free: one image alone gives the same vector as in a batch.
    alone = session.run(None, {"images": pixels[3:4]})[0]
    assert np.abs(alone[0] - got[3]).max() < 1e-5


def test_the_spec_beside_the_graph_is_the_one_inside_it(tmp_path):
    folder = _untrained(tmp_path, "small_cnn")
    path = export(folder, tmp_path / "out")
    spec = json.loads((path.parent / SPEC_FILE).read_text())
    assert json.loads(_session(path).get_modelmeta().custom_metadata_map[SPEC_KEY]) == spec
    assert spec["image_size"] == SIZE and spec["dim"] == DIM and spec["backbone"] == "small_cnn"
    assert spec["input"] == {"name": "images", "dtype": "uint8", "shape": ["N", SIZE, SIZE, 3],
                             "layout": "NHWC", "colour": "RGB"}
    assert spec["output"]["shape"] == ["N", DIM] and spec["output"]["l2_normalised"] is True
    assert spec["normalisation"]["mean"] == [0.49, 0.48, 0.45]
    assert spec["model_version"] is None  # a run's folder: no version


def test_a_folder_without_an_encoder_is_refused_by_name(tmp_path):
    with pytest.raises(BundleError, match=r"no encoder\.pt"):
        export(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_cli_exports_a_run_folder(tmp_path):
    folder = _untrained(tmp_path, "resnet18_cifar")
    out = tmp_path / "exported"
    r = subprocess.run([sys.executable, "-m", "trainer", "export", "--model", str(folder),
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "encoder.onnx" in r.stdout and f"[N, {SIZE}, {SIZE}, 3]" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["encoder.onnx", "encoder.onnx.json"]
    blobs = _files(8)
    got = _session(out / "encoder.onnx").run(
        None, {"images": np.stack([decode_square(b, SIZE) for b in blobs])})[0]
    expected = EmbeddingModel.load(folder / "encoder.pt", "cpu", "fp32").embed_files(blobs)
    assert (got * expected).sum(axis=1).mean() >= 0.9999

    r = subprocess.run([sys.executable, "-m", "trainer", "export", "--model", str(tmp_path / "x"),
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "no encoder.pt" in r.stderr and "Traceback" not in r.stderr
