"""Another encoder's label-free score on the items and views a finished run scored its own
model on, so that the two scores compare.

The promotion gate weighs a new model against the current one. The current model's own score
was measured on its own run's items: once the collection has grown, shrunk or changed since,
that is another sample (and the score's scale moves with the sample's size: a rank among 2,000
items is not a rank among 1,000), so the current model is scored again here, on the new run's
sample, with the same views.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.baseline import decode_rows
from trainer.collection import Collection
from trainer.encoder_file import EmbeddingModel
from trainer.label_free import MAX_SAMPLE, LabelFreeScore, sample_rows
from trainer.label_free_baselines import sample_score, sample_views


def score_on_run_sample(encoder: Path, run_dir: Path, collection: Collection,
                        device: str = "auto", precision: str = "auto") -> LabelFreeScore | None:
    """The score of the encoder file `encoder` on the sample of the run in `run_dir` (its
    embeddings.npz names its items, in the order its sample was drawn from) and on that
    sample's views, reading the images from `collection`, which must hold them. None when an
    item of the sample is not there or no longer reads."""
    with np.load(run_dir / "embeddings.npz") as saved:
        ids = [str(i) for i in saved["ids"]]
    # As trainer.label_free_baselines.run_figures drew it: the same rows, seed and views.
    rows = sample_rows(len(ids), MAX_SAMPLE)
    at = {item: i for i, item in enumerate(collection.ids)}
    if len(rows) < 2 or any(ids[r] not in at for r in rows):
        return None
    model = EmbeddingModel.load(encoder, device=device, precision=precision)
    keep = np.ones(len(rows), dtype=bool)
    images = decode_rows(collection, [at[ids[row]] for row in rows], model.meta.image_size,
                         keep)
    if not keep.all():
        return None
    return sample_score(model.embed_uint8, images, sample_views(images), every_part=False)
