"""Two published models of one dataset, side by side on the same items.

Everything is measured here, on the items both bundles hold, rather than read from the runs'
metrics: two runs' figures are on their own snapshots of the collection, and a figure is
comparable only on the same items.

- Weighted kNN top-1 (labelled collections), paired per query as the promotion gate pairs
  them (trainer/judge.py): the labelled evaluation split queries the labelled training items
  (the split from the dataset on disk), or, where only one of the two carries labels,
  leave-one-out over its labelled items (trainer/evaluation.knn_protocol). At most KNN_QUERIES
  queries and KNN_KEYS voters (KNN_LOO_ITEMS leave-one-out).
- The label-free score (trainer/label_free.py) of both, on one sample of at most MAX_SAMPLE
  items the dataset on disk still holds, with the same views, beside the gate's margin for
  them (trainer/judge.label_free_margin).
- The overlap of the two models' top-k neighbour lists (their bundles' indexes, among the
  items both hold) over a sample of at most OVERLAP_SAMPLE items, and the items whose lists
  changed most, with both lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer.baseline import decode_rows
from trainer.bundle import Bundle
from trainer.collection import Collection
from trainer.config import TrainConfig
from trainer.encoder_file import EmbeddingModel
from trainer.evaluation import knn_protocol
from trainer.judge import Z, correct, label_free_margin, paired_difference
from trainer.label_free import (
    DEFAULT_AUGMENTATION,
    MAX_SAMPLE,
    MEASURE,
    sample_rows,
)
from trainer.label_free_baselines import sample_score, sample_views
from trainer.neighbour_overlap import changed_most, list_overlap, neighbour_lists, renumber

KNN_QUERIES = 5_000  # labelled evaluation items that ask (a sample above this)
KNN_KEYS = 100_000  # labelled training items that vote (a sample above this)
KNN_LOO_ITEMS = 20_000  # labelled items, each left out in turn, without an evaluation split
OVERLAP_SAMPLE = 1_000  # items whose neighbour lists are compared
OVERLAP_K = 10
CHANGED_SHOWN = 12  # items whose lists changed most, shown with both lists


class CannotCompare(ValueError):
    """Two versions that cannot be compared; the message says why."""


@dataclass(frozen=True)
class Shared:
    """The items both bundles hold: their ids (in `a`'s order) and rows in each bundle."""

    ids: list[str]
    rows_a: np.ndarray
    rows_b: np.ndarray

    @classmethod
    def of(cls, a: Bundle, b: Bundle) -> Shared:
        pairs = [(row, b.row_of[item]) for row, item in enumerate(a.ids) if item in b.row_of]
        rows_a = np.array([p[0] for p in pairs], dtype=np.int64)
        rows_b = np.array([p[1] for p in pairs], dtype=np.int64)
        return cls([a.ids[r] for r in rows_a], rows_a, rows_b)


def compare(a: Bundle, b: Bundle, collection: Collection | None,
            missing: str | None = None, k: int = OVERLAP_K) -> dict[str, Any]:
    """The comparison of `a` and `b` (what GET /models/{a}/compare/{b} answers), with
    neighbour lists of `k` items. `collection`: the dataset as it is on disk (its evaluation
    split, and the images of the label-free score); None with `missing` saying why it is not
    there."""
    dataset_a, dataset_b = a.manifest.get("dataset"), b.manifest.get("dataset")
    if dataset_a != dataset_b:
        raise CannotCompare(f"version {a.version} is a model of dataset {dataset_a!r} and "
                            f"version {b.version} of dataset {dataset_b!r}: only models of "
                            "one dataset can be compared on the same items")
    shared = Shared.of(a, b)
    if len(shared.ids) < 2:
        raise CannotCompare(f"versions {a.version} and {b.version} hold {len(shared.ids)} "
                            "items in common: at least 2 are needed")
    notes: list[str] = []
    knn = _knn(a, b, shared, collection, notes)
    label_free = None
    if collection is not None:
        label_free = _label_free(a, b, shared, collection, notes)
    else:
        notes.append(f"no label-free score: {missing}")
    overlap, changed = _overlap(a, b, shared, k)
    return {
        "a": _side(a, knn, label_free, "a"), "b": _side(b, knn, label_free, "b"),
        "dataset": dataset_a, "common_items": len(shared.ids),
        "knn": _common_part(knn), "label_free": _common_part(label_free),
        "overlap": overlap, "changed_most": changed, "notes": notes,
    }


def _common_part(figure: dict[str, Any] | None) -> dict[str, Any] | None:
    """A figure without each model's own value (given with the model)."""
    return None if figure is None else {
        key: value for key, value in figure.items() if key not in ("a", "b")}


def _side(bundle: Bundle, knn: dict[str, Any] | None, label_free: dict[str, Any] | None,
          which: str) -> dict[str, Any]:
    m = bundle.manifest
    return {"version": bundle.version, "created": m.get("created"),
            "backbone": m.get("backbone"), "dim": bundle.dim, "item_count": len(bundle.ids),
            "knn_top1": knn[which] if knn else None,
            "label_free": label_free[which] if label_free else None}


# --- weighted kNN -------------------------------------------------------------------------

def _knn(a: Bundle, b: Bundle, shared: Shared, collection: Collection | None,
         notes: list[str]) -> dict[str, Any] | None:
    labels = _shared_labels(a, b, shared)
    if not (labels >= 0).any() or len(a.classes) < 2:
        notes.append("no kNN figures: the items in common carry no labels")
        return None
    is_eval = np.zeros(len(shared.ids), dtype=bool)
    if collection is not None:
        split = dict(zip(collection.ids, collection.is_eval.tolist(), strict=True))
        is_eval = np.array([split.get(item, False) for item in shared.ids], dtype=bool)
    rng = np.random.default_rng(0)
    protocol = knn_protocol(labels, is_eval)
    if protocol.leave_one_out:
        picked = _pick(protocol.queries, KNN_LOO_ITEMS, rng)
    else:
        picked = np.concatenate([_pick(protocol.queries, KNN_QUERIES, rng),
                                 _pick(protocol.keys, KNN_KEYS, rng)])
    k, sigma = _knn_settings(a, b)
    right = {name: correct(np.asarray(bundle.vectors[rows[picked]]), labels[picked],
                           is_eval[picked], len(a.classes), k, sigma)
             for name, bundle, rows in (("a", a, shared.rows_a), ("b", b, shared.rows_b))}
    if len(right["a"]) == 0:
        notes.append("no kNN figures: too few labelled items in common to vote")
        return None
    difference, se = paired_difference(right["b"], right["a"])
    return {"a": float(right["a"].mean()), "b": float(right["b"].mean()),
            "protocol": protocol.name, "queries": len(right["a"]), "k": k, "sigma": sigma,
            "difference": difference, "standard_error": se, "margin": Z * se}


def _shared_labels(a: Bundle, b: Bundle, shared: Shared) -> np.ndarray:
    """`a`'s class index of each shared item, -1 where either model has no label for it or
    the two disagree."""
    la, lb = a.labels[shared.rows_a], b.labels[shared.rows_b]
    index_a = {name: i for i, name in enumerate(a.classes)}
    # b's class index -> a's index of the same name (-1: a has no such class), -1 appended
    # for b's "no label".
    in_a = np.array([index_a.get(name, -1) for name in b.classes] + [-1], dtype=np.int64)
    same = (la >= 0) & (in_a[lb] == la)
    return np.where(same, la, -1).astype(np.int64)


def _pick(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return rows if len(rows) <= limit else np.sort(rng.choice(rows, limit, replace=False))


def _knn_settings(a: Bundle, b: Bundle) -> tuple[int, float]:
    """The k and sigma both runs evaluated with; the trainer's defaults if they differ."""
    default = TrainConfig()
    ca, cb = a.manifest.get("config") or {}, b.manifest.get("config") or {}
    k = ca.get("knn_k") if ca.get("knn_k") == cb.get("knn_k") else None
    sigma = ca.get("knn_sigma") if ca.get("knn_sigma") == cb.get("knn_sigma") else None
    return int(k or default.knn_k), float(sigma or default.knn_sigma)


# --- the label-free score -----------------------------------------------------------------

def _label_free(a: Bundle, b: Bundle, shared: Shared, collection: Collection,
                notes: list[str]) -> dict[str, Any] | None:
    on_disk = {item: row for row, item in enumerate(collection.ids)}
    usable = np.array([j for j, item in enumerate(shared.ids) if item in on_disk],
                      dtype=np.int64)
    if len(usable) < len(shared.ids):
        notes.append(f"label-free score: {len(shared.ids) - len(usable)} items in common are "
                     "not in the dataset's folder (e.g. added through the API) and are left "
                     "out")
    picked = usable[sample_rows(len(usable), MAX_SAMPLE)]
    images: dict[int, torch.Tensor] = {}
    keep = np.ones(len(picked), dtype=bool)
    for size in {a.model.meta.image_size, b.model.meta.image_size}:
        images[size] = decode_rows(collection, [on_disk[shared.ids[j]] for j in picked], size,
                                   keep)
    if keep.sum() < 2:
        notes.append("no label-free score: fewer than 2 readable images in common")
        return None
    scores = {}
    for name, bundle, rows in (("a", a, shared.rows_a), ("b", b, shared.rows_b)):
        sample = images[bundle.model.meta.image_size][torch.from_numpy(keep)]
        clean = np.asarray(bundle.vectors[rows[picked[keep]]])
        scores[name] = sample_score(as_trained(bundle).embed_uint8, sample,
                                    sample_views(sample), clean)
    return {"a": scores["a"].score, "b": scores["b"].score, "items": int(keep.sum()),
            "augmentation": DEFAULT_AUGMENTATION, "measure": MEASURE,
            "difference": scores["b"].score - scores["a"].score,
            "margin": label_free_margin(scores["b"].per_item, scores["a"].per_item)}


# --- neighbour lists ----------------------------------------------------------------------

def _overlap(a: Bundle, b: Bundle, shared: Shared,
             k: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    k = min(k, len(shared.ids) - 1)
    picked = sample_rows(len(shared.ids), OVERLAP_SAMPLE)
    lists = {}
    for name, bundle, rows in (("a", a, shared.rows_a), ("b", b, shared.rows_b)):
        shared_of = np.full(len(bundle.ids), -1, dtype=np.int64)
        shared_of[rows] = np.arange(len(rows))
        scores, found = neighbour_lists(bundle.index, bundle.vectors, rows[picked], rows, k)
        lists[name] = (scores, renumber(found, shared_of), bundle)
    overlap = list_overlap(lists["a"][1], lists["b"][1])
    changed = [{"id": shared.ids[picked[i]], "label": _label(a, shared.rows_a[picked[i]]),
                "overlap": float(overlap[i]),
                "a": _neighbours(shared, *lists["a"], i),
                "b": _neighbours(shared, *lists["b"], i)}
               for i in changed_most(overlap, CHANGED_SHOWN)]
    return {"k": k, "items": len(picked), "mean": float(overlap.mean())}, changed


def _neighbours(shared: Shared, scores: np.ndarray, found: np.ndarray, bundle: Bundle,
                i: int) -> list[dict[str, Any]]:
    out = []
    for score, j in zip(scores[i].tolist(), found[i].tolist(), strict=True):
        if j < 0:
            continue
        item = shared.ids[j]
        out.append({"id": item, "score": float(score),
                    "label": _label(bundle, bundle.row_of[item])})
    return out


def _label(bundle: Bundle, row: int) -> str | None:
    label = int(bundle.labels[row])
    return bundle.classes[label] if label >= 0 else None


def as_trained(bundle: Bundle) -> EmbeddingModel:
    """The bundle's encoder as its job measured it: the trained module at the precision the
    served one runs. The served graph (trainer/inference_graph.py) differs from it in the last
    digits, and a score compared here must be the one in the model's metrics."""
    runtime = getattr(bundle.model, "runtime", None)
    device = runtime.device.type if runtime is not None else "cpu"
    precision = "bf16" if runtime is not None and runtime.bf16 else "fp32"
    return EmbeddingModel.load(bundle.path / "encoder.pt", device, precision)
