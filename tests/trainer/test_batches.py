"""Batches cover every row once, and the embedding pass writes every row: a row left out would
be published as whatever memory np.empty handed over (it was, until split_batches merged a
short last batch into the wrong slot, losing the batch before)."""

import numpy as np
import pytest
import torch

from trainer.errors import EncoderOutputError
from trainer.loader import embed_all, split_batches


def test_a_short_last_batch_joins_the_one_before():
    assert [b.tolist() for b in split_batches(np.arange(5), 2)] == [[0, 1], [2, 3, 4]]
    assert [b.tolist() for b in split_batches(np.arange(4), 2)] == [[0, 1], [2, 3]]
    assert [b.tolist() for b in split_batches(np.arange(1), 2)] == [[0]]
    assert [len(b) for b in split_batches(np.arange(513), 256)] == [256, 257]
    # Two processes need two images each of every batch: min_last = 4.
    assert [b.tolist() for b in split_batches(np.arange(10), 4, min_last=4)] == [
        [0, 1, 2, 3], [4, 5, 6, 7, 8, 9]]


@pytest.mark.parametrize("batch_size,min_last", [(2, 2), (3, 2), (4, 4), (256, 2)])
def test_every_row_is_in_exactly_one_batch_in_order(batch_size, min_last):
    order = np.random.default_rng(0).permutation(600)
    for n in range(1, 600, 7):
        batches = split_batches(order[:n], batch_size, min_last)
        assert np.array_equal(np.concatenate(batches), order[:n]), n
        assert all(len(b) >= min(min_last, n) for b in batches), n


class _Cached:
    """Batches of cached images (BatchReader's cached path): image i is filled with i."""

    def __init__(self, n: int) -> None:
        self.images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2)

    def __call__(self, batches):
        for rows in batches:
            yield rows, self.images[torch.from_numpy(rows)]


def _circle(images: torch.Tensor, off_unit: int | None = None) -> np.ndarray:
    """Image i -> (cos i, sin i); image `off_unit` -> twice that, as an encoder that failed."""
    i = images[:, 0, 0, 0].double()
    out = torch.stack([torch.cos(i), torch.sin(i)], dim=1)
    out[i == off_unit] *= 2
    return out.float().numpy()


def test_embed_all_writes_every_row_in_order():
    for n in (1, 4, 5, 7, 9):  # 5, 7, 9: a last batch of one row joins the one before
        out = embed_all(_Cached(n), n, 2, _circle, batch_size=2)  # type: ignore[arg-type]
        i = np.arange(n)
        assert np.allclose(out, np.stack([np.cos(i), np.sin(i)], axis=1), atol=1e-6), n


def test_embed_all_refuses_a_vector_that_is_not_unit():
    with pytest.raises(EncoderOutputError, match=r"1 vector is not of length 1: row 5 \(norm 2\)"):
        embed_all(_Cached(7), 7, 2, lambda x: _circle(x, off_unit=5),  # type: ignore[arg-type]
                  batch_size=2)


def test_a_run_on_513_images_embeds_every_one(digits_dir, tmp_path):
    """Through the real engine: 513 = 2 x 256 + 1 items, so the embedding pass's last batch
    holds one image (and, at batch size 32, the training's too). Every row of the run's
    embeddings is its image's unit vector: before the fix, 256 rows were never written."""
    from trainer.config import TrainConfig
    from trainer.data import open_collection
    from trainer.engine import Trainer
    from trainer.unit_vectors import off_unit_rows

    images = sorted((digits_dir / "train").rglob("*.png"))[:513]
    for path in images:
        target = tmp_path / "data" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    config = TrainConfig.from_dict({"backbone": "small_cnn", "image_size": 16, "rounds": 1,
                                    "epochs_per_round": 1, "batch_size": 32, "knn_k": 10,
                                    "num_workers": 0})
    Trainer(config, open_collection(tmp_path / "data"), tmp_path / "run").run()
    with np.load(tmp_path / "run" / "embeddings.npz") as saved:
        vectors, ids = saved["vectors"], [str(i) for i in saved["ids"]]
    assert len(ids) == 513 == len(set(ids))
    assert off_unit_rows(vectors).tolist() == []
