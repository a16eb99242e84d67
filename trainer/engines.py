"""Inference engines: what runs a bundle's encoder when the service embeds an image.

- `torch`: the trained encoder's inference graph (`EmbeddingModel`, serving: batch norm folded
  into the convolutions, trainer/inference_graph.py; CPU or CUDA, bf16 where the device has it).
- `onnxruntime`: the bundle's ONNX export (trainer/export.py: the graph
  GET /models/{version}/encoder.onnx serves, made and kept beside encoder.pt on first use),
  run by onnxruntime on the CPU in fp32. On CPUs without bf16 it is faster than the torch
  forward (docs/benchmarks.md); its vectors equal the torch engine's to about 1e-7.

Both take and give the same: B x 3 x S x S uint8 images -> B x D float32 unit vectors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import export
from trainer.encoder_file import Embedder, EmbeddingModel, EncoderMeta, decode_chw
from trainer.errors import BundleError

ENGINES = ("torch", "onnxruntime")


class OnnxEmbeddingModel:
    """An ONNX export run by onnxruntime, with EmbeddingModel's interface."""

    def __init__(self, session: Any, meta: EncoderMeta) -> None:
        self.session = session
        self.meta = meta

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], threads: int = 1) -> OnnxEmbeddingModel:
        """`threads`: onnxruntime's threads per call (1: the calling thread alone, as each of
        the service's inference threads runs its own share of the cores)."""
        import onnxruntime as ort

        folder = Path(model_dir)
        spec = export.read_spec(folder)
        if spec is None:
            export.export(folder, folder)
            spec = export.read_spec(folder)
        if spec is None:
            raise BundleError(f"the ONNX export of {folder.name} cannot be read back")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(folder / export.ONNX_FILE), options,
                                       providers=["CPUExecutionProvider"])
        norm = spec["normalisation"]
        meta = EncoderMeta(spec["backbone"], int(spec["dim"]), int(spec["image_size"]),
                           tuple(norm["mean"]), tuple(norm["std"]))
        return cls(session, meta)

    def embed_uint8(self, images: torch.Tensor) -> np.ndarray:
        """B x 3 x S x S uint8 -> B x D float32 unit vectors."""
        pixels = images.permute(0, 2, 3, 1).contiguous().numpy()  # the graph takes NHWC
        return self.session.run(None, {export.INPUT: pixels})[0]

    def decode(self, data: bytes) -> torch.Tensor:
        return decode_chw(data, self.meta.image_size)

    def embed_files(self, blobs: Sequence[bytes]) -> np.ndarray:
        return self.embed_uint8(torch.stack([self.decode(b) for b in blobs]))


def load_embedder(model_dir: str | os.PathLike[str], engine: str = "torch",
                  device: str = "auto", precision: str = "auto",
                  threads: int = 1) -> Embedder:
    """The encoder of a run folder or bundle, run by `engine` (one of ENGINES)."""
    if engine == "onnxruntime":
        return OnnxEmbeddingModel.load(model_dir, threads)
    if engine != "torch":
        raise ValueError(f"unknown inference engine {engine!r}; one of {', '.join(ENGINES)}")
    return EmbeddingModel.load(Path(model_dir) / "encoder.pt", device, precision, serving=True)
