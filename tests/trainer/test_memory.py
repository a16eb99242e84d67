"""Memory per process at ImageNet's size: the estimate, and a real bank of that size."""

import torch

from trainer.bank import MemoryBank
from trainer.memory import IMAGENET_TRAIN, bytes_per_process, sharding_pays_above

MB = 1e6


def test_memory_per_process_at_imagenet_size():
    one = bytes_per_process(IMAGENET_TRAIN, 128, 1, batch_size=128, processes=1)
    eight = bytes_per_process(IMAGENET_TRAIN, 128, 1, batch_size=128, processes=8)
    assert round(one["bank"] / MB) == 656  # 1,281,167 x 128 x 4 B, replicated on every process
    assert eight["bank"] == one["bank"] and eight["positive_table"] == one["positive_table"]
    assert round(one["loss_logits"] / MB) == 656 and round(eight["loss_logits"] / MB) == 82
    assert eight["total"] < 1.5e9 < one["total"] < 2.5e9
    # A replicated bank stays far below a quarter of an 80 GB GPU until ~42 M images.
    assert sharding_pays_above(128) > 30 * IMAGENET_TRAIN


def test_a_bank_of_imagenet_size_is_what_the_estimate_says_and_updates():
    gen = torch.Generator().manual_seed(0)
    bank = MemoryBank(IMAGENET_TRAIN, 128, 0.5, gen)
    assert bank.vectors.shape == (IMAGENET_TRAIN, 128)
    assert bank.vectors.numel() * bank.vectors.element_size() == bytes_per_process(
        IMAGENET_TRAIN)["bank"]
    index = torch.tensor([0, 640_000, IMAGENET_TRAIN - 1])
    features = torch.nn.functional.normalize(torch.randn(3, 128, generator=gen), dim=1)
    bank.update(index, features)
    assert torch.allclose(bank.vectors[index].norm(dim=1), torch.ones(3))
