"""The served graph (batch norm folded, weights cast once, TorchScript on the CPU) gives the
trained network's embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.backbones import Encoder
from trainer.device import Runtime
from trainer.encoder_file import EmbeddingModel, EncoderMeta

SIZE = 32


def _trained_like(backbone: str) -> Encoder:
    """An encoder whose batch norms hold non-trivial running statistics, as after training."""
    torch.manual_seed(0)
    encoder = Encoder(backbone, 16)
    encoder.train()
    with torch.no_grad():
        for _ in range(3):
            encoder(torch.randn(8, 3, SIZE, SIZE) * 2 + 0.5)
    return encoder.eval()


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18_cifar"])
@pytest.mark.parametrize("bf16", [False, True])
def test_the_served_graph_embeds_as_the_trained_network(backbone, bf16):
    encoder = _trained_like(backbone)
    meta = EncoderMeta(backbone, 16, SIZE, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    runtime = Runtime(torch.device("cpu"), bf16=bf16, channels_last=False)
    trained = EmbeddingModel(encoder, meta, Runtime(torch.device("cpu"), False, False))
    served = EmbeddingModel(encoder, meta, runtime, serving=True)
    assert isinstance(served.model, torch.jit.ScriptModule)  # GIL-free on the CPU
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in served.model.modules())
    assert served.nbytes > 0
    rng = np.random.default_rng(1)
    for n in (1, 5):  # the graph is not tied to the batch size it was traced with
        images = torch.from_numpy(rng.integers(0, 256, (n, 3, SIZE, SIZE), dtype=np.uint8))
        want, got = trained.embed_uint8(images), served.embed_uint8(images)
        assert got.shape == (n, 16) and got.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        cosine = (want * got).sum(axis=1)
        assert cosine.min() > (0.999 if bf16 else 0.99999), cosine


def test_the_trained_module_is_left_as_it_was():
    encoder = _trained_like("small_cnn")
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    meta = EncoderMeta("small_cnn", 16, SIZE, (0.5,) * 3, (0.25,) * 3)
    EmbeddingModel(encoder, meta, Runtime(torch.device("cpu"), True, False), serving=True)
    after = encoder.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.dtype == torch.float32 for p in encoder.parameters())
