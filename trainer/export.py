"""The encoder as an ONNX graph, for running embeddings outside this project.

    encoder.onnx        uint8 images [N, S, S, 3] (RGB, NHWC) -> float32 [N, dim] unit vectors
    encoder.onnx.json   what the graph takes and gives (SPEC_FILE; also inside the graph, as
                        the metadata entry SPEC_KEY)

The images are prepared as `trainer.images.decode_square` prepares them (S = the model's
image_size); the scaling to [0, 1] and the dataset's mean and std are inside the graph, so the
graph's output is the embedding /embed returns for the same file.

Exported with torch's TorchScript-based exporter: these encoders are static CNNs (no control
flow, which is what the torch.export-based exporter is for), and it needs `onnx` alone (not
onnxscript), exports in seconds rather than tens of seconds on a CPU, and matches the torch
forward to about 1e-7 on every backbone (tests/trainer/test_export.py).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.backbones import Encoder
from trainer.encoder_file import EmbeddingModel, EncoderMeta
from trainer.errors import BundleError
from trainer.files import atomic_write_bytes, atomic_write_json

FORMAT = 1
ONNX_FILE = "encoder.onnx"
SPEC_FILE = "encoder.onnx.json"
SPEC_KEY = "and.encoder_spec"
OPSET = 17
INPUT, OUTPUT = "images", "embeddings"
PREPARATION = ("decode; turn upright by its EXIF orientation; convert to RGB (transparent "
               "pixels over white, 16-bit greyscale rescaled to 8 bits); resize the shorter "
               "side to image_size (bicubic) and crop the centre to image_size x image_size "
               "(trainer.images.decode_square)")


class Uint8Encoder(nn.Module):
    """uint8 [N, S, S, 3] -> unit vectors: the same arithmetic as `augment.normalise` followed
    by the encoder, so the graph's output equals `EmbeddingModel.embed_uint8`'s."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, encoder: Encoder, meta: EncoderMeta) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mean", torch.tensor(meta.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(meta.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div(255.0)
        return self.encoder(x.sub(self.mean).div(self.std))


def spec(meta: EncoderMeta, version: str | None = None) -> dict[str, Any]:
    """What the graph takes and gives (the JSON file beside it)."""
    size = meta.image_size
    return {
        "format": FORMAT,
        "onnx_file": ONNX_FILE,
        "model_version": version,
        "backbone": meta.backbone,
        "image_size": size,
        "dim": meta.dim,
        "input": {"name": INPUT, "dtype": "uint8", "shape": ["N", size, size, 3],
                  "layout": "NHWC", "colour": "RGB"},
        "output": {"name": OUTPUT, "dtype": "float32", "shape": ["N", meta.dim],
                   "l2_normalised": True},
        "preparation": PREPARATION,
        "normalisation": {"mean": list(meta.mean), "std": list(meta.std), "in_graph": True,
                          "formula": "(pixel / 255 - mean) / std, per channel"},
        "opset": OPSET,
    }


def onnx_bytes(model: EmbeddingModel, version: str | None = None) -> bytes:
    """The serialised graph of a loaded encoder, its spec in the graph's metadata."""
    import onnx

    meta = model.meta
    # A copy in fp32 on the CPU, in the default memory layout: what the graph stores.
    encoder = Encoder(meta.backbone, meta.dim)
    encoder.load_state_dict({k: v.detach().cpu().contiguous()
                             for k, v in model.model.state_dict().items()})
    wrapped = Uint8Encoder(encoder.eval(), meta).eval()
    example = torch.zeros(2, meta.image_size, meta.image_size, 3, dtype=torch.uint8)
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp, torch.no_grad():
        path = Path(tmp) / ONNX_FILE
        torch.onnx.export(wrapped, (example,), path, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "N"}, OUTPUT: {0: "N"}})
        proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, json.dumps(spec(meta, version), sort_keys=True)
    proto.producer_name = "and-retrieval"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _encoder_path(model_dir: Path) -> Path:
    path = model_dir / "encoder.pt"
    if not path.is_file():
        raise BundleError(f"no encoder.pt in {os.fspath(model_dir)!r}: not a finished "
                          "training run's folder or a model bundle")
    return path


def _version(model_dir: Path) -> str | None:
    """A bundle's version (from its manifest); None for a training run's folder."""
    try:
        version = json.loads((model_dir / "manifest.json").read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def export(model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write encoder.onnx and encoder.onnx.json of a run folder or a bundle into `out_dir`
    (each whole or not at all; the spec last, so a spec is never beside an older graph it does
    not describe); returns the graph's path."""
    source, out = Path(model_dir), Path(out_dir)
    model = EmbeddingModel.load(_encoder_path(source), device="cpu", precision="fp32")
    version = _version(source)
    data = onnx_bytes(model, version)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / ONNX_FILE, data)
    atomic_write_json(out / SPEC_FILE, spec(model.meta, version))
    return out / ONNX_FILE


def read_spec(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The spec of an export in `out_dir` made by this code's format; None when there is none
    (or an older format's, which is exported again)."""
    out = Path(out_dir)
    try:
        found = json.loads((out / SPEC_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        return None
    return found if (out / ONNX_FILE).is_file() else None
