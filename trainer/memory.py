"""What one training process holds in memory for a collection of N images, on paper.

Every process keeps a replica of the memory bank and of the positive table (they are updated
identically everywhere, see trainer.distributed); the large transient buffer is the fused
loss's B x N logits, B being this process's share of the global batch. Rank 0 alone runs
discovery, in blocks of DEFAULT_BLOCK_ELEMS similarities. Images are not counted: a
collection larger than cache_max_gb is decoded on the fly (cache_images=auto).
"""

from __future__ import annotations

import math

from trainer.discovery import DEFAULT_BLOCK_ELEMS

IMAGENET_TRAIN = 1_281_167


def bytes_per_process(n: int, dim: int = 128, neighbours: int = 1, batch_size: int = 128,
                      processes: int = 1) -> dict[str, int]:
    """Bytes of each part held by one process (rank 0 adds `discovery` during discovery)."""
    local_batch = math.ceil(batch_size / processes)
    parts = {
        "bank": n * dim * 4,  # fp32 N x D
        "positive_table": n * (1 + neighbours) * 8,  # int64 N x (1+k)
        "anchors_and_neighbours": n * (1 + neighbours) * 8,  # at most every sample an anchor
        "labels_and_order": 2 * n * 8,  # int64 labels on the device, the epoch's permutation
        "loss_logits": local_batch * n * 4,  # fp32 B_local x N, softmax kept for backward
        "gathered_features": batch_size * dim * 4,  # the global batch's features, each step
        # entropy: a block of similarities, its log-softmax and their product
        "discovery": 3 * min(DEFAULT_BLOCK_ELEMS, max(1, DEFAULT_BLOCK_ELEMS // n) * n) * 4,
    }
    parts["total"] = sum(parts.values())
    return parts


def sharding_pays_above(dim: int = 128, device_bytes: int = 80 * 1024**3,
                        share: float = 0.25) -> int:
    """N above which a replicated bank would take more than `share` of a device's memory:
    there, sharding the bank (each process N/W rows, logits gathered) starts to pay."""
    return int(device_bytes * share / (dim * 4))
