"""The encoders and collections of the label-free score's validation (bench/label_free.py):
labelled collections written as image folders, a panel of encoders per collection spread in
quality, and every encoder's embeddings of the collection and of fixed augmented views of it,
cached on disk so the score can be studied without training or embedding again.

Everything lands under var/label_free/ (ignored by git); a rerun trains nothing it has. A
panel seed other than 0 builds an independent replicate beside it (var/label_free/panel-seed-N/):
other CIFAR-10 images, other photo patches, and every encoder initialised and trained with other
seeds, so a score chosen on one build can be checked on a build that did not choose it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import json
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import CIFAR_ZIP, REPO
from trainer.baseline import pixel_vectors
from trainer.config import TrainConfig
from trainer.data import open_collection
from trainer.encoder_file import EmbeddingModel
from trainer.engine import Trainer
from trainer.evaluation import headline, knn_evaluation
from trainer.label_free import AUGMENTATIONS, augmented_views, untrained_model
from trainer.loader import Prepared, prepare

ROOT = REPO / "var" / "label_free"
SEED_STRIDE = 100  # a panel seed shifts every member's training seed by this much
# Views embedded by every encoder: the mild augmentation under three seeds (the noise of the
# score), the training one under one.
VIEWS = (("mild", 0), ("mild", 1), ("mild", 2), ("train", 0))
# Few steps per epoch on 1,200 training images: the demo's small-collection settings.
BASE = ["backbone=small_cnn", "batch_size=64", "lr=0.06", "lr_milestones=[0.75]",
        "eval_each_round=false", "device=cpu", "num_workers=0", "precision=fp32",
        "compile=never"]


@dataclass(frozen=True)
class Member:
    name: str
    kind: str  # "pixels", "untrained", "trained" or "collapsed" (a trained one's rank-1 head)
    overrides: tuple[str, ...] = ()
    source: str = ""  # collapsed: the trained member it is made from


PANEL = (
    Member("pixels", "pixels"),
    Member("untrained-cnn", "untrained", ("backbone=small_cnn",)),
    Member("untrained-resnet", "untrained", ("backbone=resnet18", "image_size=32")),
    Member("instance-1", "trained", ("rounds=1", "epochs_per_round=1")),
    Member("instance-3", "trained", ("rounds=1", "epochs_per_round=3")),
    Member("instance-3-seed1", "trained", ("rounds=1", "epochs_per_round=3", "seed=1")),
    Member("instance-6", "trained", ("rounds=1", "epochs_per_round=6")),
    Member("and-3x1", "trained", ("rounds=3", "epochs_per_round=1")),
    Member("and-3x2", "trained", ("rounds=3", "epochs_per_round=2")),
    # Longer budgets: the short runs above stay below the untrained networks in kNN on every
    # collection; these reach them or pass them.
    Member("instance-20", "trained", ("rounds=1", "epochs_per_round=20")),
    Member("and-4x5", "trained", ("rounds=4", "epochs_per_round=5")),
    Member("resnet-instance-2", "trained",
           ("backbone=resnet18", "image_size=32", "rounds=1", "epochs_per_round=2")),
    Member("collapsed", "collapsed", source="instance-6"),
)


# --- collections ------------------------------------------------------------------------

# Test queries of a collection where the data allows: the labelled reference is kNN top-1 on
# them, and with 250 its sampling noise (sd 2.3-2.9 points) was as large as the differences
# between the pairs it had to order (2-5 points).
TEST_QUERIES = 1000


def root_of(panel_seed: int = 0) -> Path:
    return ROOT if panel_seed == 0 else ROOT / f"panel-seed-{panel_seed}"


def _cifar_slice(root: Path, grey: bool, offset: int, seed: int, train: int = 1000,
                 test: int = TEST_QUERIES) -> None:
    """`train` + `test` CIFAR-10 images drawn at random (the grey slice takes the next ones,
    so the two collections share no image)."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(CIFAR_ZIP) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))
        for split, count in (("train", train), ("test", test)):
            pool = [n for n in names if f"/{split}/" in n]
            picks = rng.permutation(len(pool))[offset * count:(offset + 1) * count]
            for i in picks:
                member = pool[i]
                label = member.split("/")[-2]
                folder = root / split / label
                folder.mkdir(parents=True, exist_ok=True)
                data = z.read(member)
                if grey:
                    Image.open(io.BytesIO(data)).convert("L").save(
                        folder / (Path(member).stem + ".png"))
                else:
                    (folder / Path(member).name).write_bytes(data)


def _digits(root: Path, seed: int) -> None:
    from trainer.sample_data import write_digits
    write_digits(root)  # the same 1,797 images whatever the seed: there are no others


def _patches(root: Path, seed: int) -> None:
    from trainer.sample_data import write_photo_patches
    # 128 training patches per class, as the earlier builds had; the other 272 are queries.
    write_photo_patches(root, per_class=400, test_share=0.68, seed=seed)


def _scattered(root: Path, seed: int) -> None:
    from trainer.sample_data import write_scattered_digits
    write_scattered_digits(root, seed=seed)


# name -> writer(folder, panel seed)
COLLECTIONS: dict[str, Callable[[Path, int], None]] = {
    "cifar10": lambda r, s: _cifar_slice(r, grey=False, offset=0, seed=s),
    "cifar10-grey": lambda r, s: _cifar_slice(r, grey=True, offset=1, seed=s),
    "digits": _digits,
    "photo-patches": _patches,
    "scattered-digits": _scattered,
}


def collection_dir(name: str, panel_seed: int = 0) -> Path:
    folder = root_of(panel_seed) / "data" / name
    done = folder / ".complete"
    if not done.exists():
        COLLECTIONS[name](folder, panel_seed)
        done.write_text("")
    return folder


# --- encoders ---------------------------------------------------------------------------

Embed = Callable[[torch.Tensor], np.ndarray]


def _collapse(model: EmbeddingModel) -> EmbeddingModel:
    """Dimensional collapse: the head keeps only its first singular direction, so every
    embedding is one number per image plus the bias, on a line."""
    head = model.model.net[-1]
    with torch.no_grad():
        u, s, vh = torch.linalg.svd(head.weight, full_matrices=False)
        head.weight.copy_(s[0] * torch.outer(u[:, 0], vh[0]))
    return model


def member_config(member: Member, panel_seed: int = 0) -> TrainConfig:
    config = TrainConfig.from_strings([*BASE, *member.overrides])
    return dataclasses.replace(config, seed=config.seed + SEED_STRIDE * panel_seed)


def encoder(collection: str, member: Member, prepared: Prepared,
            log: Callable[[str], None], panel_seed: int = 0) -> Embed:
    if member.kind == "pixels":
        return lambda images: pixel_vectors(images, prepared.mean, prepared.std)
    config = member_config(member, panel_seed)
    if member.kind == "untrained":
        return untrained_model(config.backbone, config.embedding_dim, config.input_size,
                               prepared.mean, prepared.std, seed=config.seed,
                               device="cpu", precision="fp32").embed_uint8
    source = member if member.kind == "trained" else next(
        m for m in PANEL if m.name == member.source)
    config = member_config(source, panel_seed)
    out = root_of(panel_seed) / "runs" / collection / source.name
    if not (out / "metrics.json").exists():
        log(f"  training {collection}/{source.name}")
    Trainer(config, open_collection(collection_dir(collection, panel_seed)), out).run()
    model = EmbeddingModel.load(out / "encoder.pt", "cpu", "fp32")
    return (_collapse(model) if member.kind == "collapsed" else model).embed_uint8


def _embed(forward: Embed, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    return np.concatenate([forward(images[i:i + batch]) for i in range(0, len(images), batch)])


def panel_embeddings(collection: str, log: Callable[[str], None] = print,
                     panel_seed: int = 0) -> dict[str, dict]:
    """member name -> {"clean": N x D, "views": {(aug, seed): N x D}, "knn_top1": float},
    computed once and cached in an .npz per member."""
    folder = collection_dir(collection, panel_seed)
    cached = root_of(panel_seed) / "embeddings" / collection
    coll = open_collection(folder)
    prepared = prepare(coll, 32, num_workers=0)
    assert prepared.images is not None
    images = prepared.images
    views = {(aug, s): augmented_views(images, AUGMENTATIONS[aug], seed=s) for aug, s in VIEWS}
    out: dict[str, dict] = {}
    c = prepared.collection
    for member in PANEL:
        cache = cached / f"{member.name}.npz"
        with _locked(cache):
            _compute(cache, collection, member, prepared, views, log, panel_seed)
        blob = np.load(cache)
        out[member.name] = {
            "clean": blob["clean"], "knn_top1": float(blob["knn_top1"]),
            "views": {(aug, s): blob[f"{aug}_{s}"] for aug, s in VIEWS},
        }
    (cached / "collection.json").write_text(json.dumps(
        {"items": len(c), "classes": len(c.classes), "eval_items": int(c.is_eval.sum())}))
    return out


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One process at a time trains and embeds a member (two may fill the cache at once)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _compute(cache: Path, collection: str, member: Member, prepared: Prepared,
             views: dict[tuple[str, int], torch.Tensor], log: Callable[[str], None],
             panel_seed: int) -> None:
    c, images = prepared.collection, prepared.images
    assert images is not None
    if cache.exists():
        return
    forward = encoder(collection, member, prepared, log, panel_seed)
    arrays = {"clean": _embed(forward, images)}
    for (aug, s), v in views.items():
        arrays[f"{aug}_{s}"] = _embed(forward, v)
    knn = knn_evaluation(arrays["clean"], c.labels, c.is_eval, len(c.classes))
    arrays["knn_top1"] = np.asarray(headline(knn)[0])
    partial = cache.with_suffix(".partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, cache)
    log(f"  embedded {collection}/{member.name}: kNN top-1 "
        f"{float(arrays['knn_top1']):.3f}")
