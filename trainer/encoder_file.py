"""The trained encoder on disk, and the inference side that embeds images with it.

The file holds the weights with everything needed to preprocess an image the way training did
(input size, dataset mean and std), so a bundle can be served without its training config.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from trainer.augment import normalise
from trainer.backbones import Encoder
from trainer.checkpoint import save
from trainer.device import Runtime, resolve
from trainer.errors import BundleError
from trainer.images import decode_square
from trainer.inference_graph import for_inference, weight_bytes

FORMAT = 1


@dataclass(frozen=True)
class EncoderMeta:
    backbone: str
    dim: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def save_encoder(path: str | os.PathLike[str], model: Encoder, meta: EncoderMeta) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save(path, {"format": FORMAT, "meta": meta.__dict__, "state_dict": state})


def decode_chw(data: bytes, size: int) -> torch.Tensor:
    """Encoded image -> 3 x S x S uint8, exactly as training preprocessed it."""
    return torch.from_numpy(decode_square(data, size)).permute(2, 0, 1)


class Embedder(Protocol):
    """What embeds images for the service, whichever engine runs it (trainer/engines.py)."""

    meta: EncoderMeta

    def embed_uint8(self, images: torch.Tensor) -> np.ndarray:
        """B x 3 x S x S uint8 -> B x D float32 unit vectors."""
        ...

    def decode(self, data: bytes) -> torch.Tensor: ...

    def embed_files(self, blobs: Sequence[bytes]) -> np.ndarray: ...


class EmbeddingModel:
    """A loaded encoder in eval mode: uint8 images or encoded files -> unit vectors.

    `serving`: run the inference graph (trainer/inference_graph.py: batch norm folded, weights
    cast once, TorchScript on the CPU) instead of the trained module under autocast; `model` is
    then that graph, whose parameters are not the trained ones. `nbytes`: the weights in
    memory."""

    def __init__(self, model: Encoder, meta: EncoderMeta, runtime: Runtime,
                 serving: bool = False) -> None:
        self.dtype: torch.dtype | None = None
        self.model: torch.nn.Module
        if serving:
            graph = for_inference(model, runtime, meta.image_size)
            self.model, self.dtype, self.nbytes = graph.module, graph.dtype, graph.nbytes
        else:
            self.model = runtime.prepare(model).eval()
            self.nbytes = weight_bytes(self.model)
        self.meta = meta
        self.runtime = runtime
        self._mean = torch.tensor(meta.mean, device=runtime.device)
        self._std = torch.tensor(meta.std, device=runtime.device)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = "auto",
             precision: str = "auto", serving: bool = False) -> EmbeddingModel:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            meta = EncoderMeta(**{**blob["meta"], "mean": tuple(blob["meta"]["mean"]),
                                  "std": tuple(blob["meta"]["std"])})
            model = Encoder(meta.backbone, meta.dim)
            model.load_state_dict(blob["state_dict"])
        # A damaged file fails inside torch.load with any of these (an empty one with
        # EOFError, one that is not a pickle or a zip with UnpicklingError).
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, RuntimeError, TypeError,
                ValueError) as exc:
            raise BundleError(f"cannot load encoder {os.fspath(path)!r}: {exc}") from exc
        return cls(model, meta, resolve(device, precision), serving)

    @torch.no_grad()
    def embed_uint8(self, images: torch.Tensor) -> np.ndarray:
        """B x 3 x S x S uint8 -> B x D float32 unit vectors."""
        x = self.runtime.layout(normalise(self.runtime.to_device(images), self._mean,
                                          self._std))
        if self.dtype is not None:
            out = self.model(x.to(self.dtype))
        else:
            with self.runtime.autocast():
                out = self.model(x)
        return out.float().cpu().numpy()

    def decode(self, data: bytes) -> torch.Tensor:
        return decode_chw(data, self.meta.image_size)

    def embed_files(self, blobs: Sequence[bytes]) -> np.ndarray:
        return self.embed_uint8(torch.stack([self.decode(b) for b in blobs]))
