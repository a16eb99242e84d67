"""Near-duplicate threshold by measurement: copies of real images (JPEG re-encoded, resized,
cropped) among distinct ones, precision and recall of "cosine >= t" over thresholds.

    python -m bench.duplicates [--data cifar10-jpeg.zip] [--train-items 5000] [--epochs 10]

A small_cnn AND model is trained briefly on training images, then `--originals` test images,
none seen in training, are copied `len(COPIES)` ways each. Every pair among originals and
copies is scored: a pair is a true duplicate when both come from the same original. Precision
and recall of the pairs at or above each threshold, and recall per kind of copy (copy vs its
own original), go to bench/results/duplicates.json.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import CIFAR_ZIP, report
from trainer.config import TrainConfig
from trainer.data import open_collection
from trainer.encoder_file import EmbeddingModel
from trainer.engine import Trainer


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _crop(share: float, corner: bool) -> Callable[[Image.Image], bytes]:
    def copy(image: Image.Image) -> bytes:
        w, h = image.size
        cw, ch = round(w * share), round(h * share)
        left, top = (0, 0) if corner else ((w - cw) // 2, (h - ch) // 2)
        return _jpeg(image.crop((left, top, left + cw, top + ch)), 90)
    return copy


# Each kind of copy, from the decoded original. Sizes are relative: CIFAR images are 32 px.
COPIES: dict[str, Callable[[Image.Image], bytes]] = {
    "jpeg_q75": lambda im: _jpeg(im, 75),
    "jpeg_q30": lambda im: _jpeg(im, 30),
    "half_size_png": lambda im: _png(im.resize((im.width // 2, im.height // 2),
                                               Image.Resampling.BILINEAR)),
    "double_size_jpeg": lambda im: _jpeg(im.resize((im.width * 2, im.height * 2),
                                                   Image.Resampling.BICUBIC), 90),
    "center_crop_90": _crop(0.9, corner=False),
    "center_crop_75": _crop(0.75, corner=False),
    "corner_crop_80": _crop(0.8, corner=True),
}
EVAL_ITEMS = 1000
THRESHOLDS = [round(t, 3) for t in np.arange(0.70, 0.991, 0.01)] + [0.995, 0.999]


def _originals(data: str, count: int, seed: int) -> list[bytes]:
    """`count` test-split images, drawn at random, as stored (JPEG)."""
    with zipfile.ZipFile(data) as z:
        names = sorted(n for n in z.namelist() if "/test/" in n and n.endswith(".jpg"))
        picks = np.random.default_rng(seed).choice(len(names), size=count, replace=False)
        return [z.read(names[i]) for i in sorted(picks)]


def _train(data: str, items: int, epochs: int, out: str) -> tuple[Path, dict]:
    collection = open_collection(data)
    rng = np.random.default_rng(0)
    train = rng.permutation(collection.train_indices)[:items]
    held = rng.permutation(collection.eval_indices)[:EVAL_ITEMS]  # kNN figure only
    collection = collection.subset(np.sort(np.concatenate([train, held])))
    config = TrainConfig.from_strings(["backbone=small_cnn", "rounds=2", "eval_each_round=false",
                                       f"epochs_per_round={max(1, epochs // 2)}"])
    result = Trainer(config, collection, out).run()
    return Path(out) / "encoder.pt", {"train_items": items, "epochs": config.total_epochs,
                                      "rounds": config.rounds,
                                      "knn_top1": result.metrics.get("knn_top1")}


def measure(vectors: np.ndarray, source: np.ndarray, kind: np.ndarray) -> dict:
    """Precision/recall of pairs >= t over THRESHOLDS, and per-kind recall of copy vs
    original."""
    sims = vectors @ vectors.T
    upper = np.triu_indices(len(vectors), k=1)
    scores = sims[upper]
    same = source[upper[0]] == source[upper[1]]
    positives = int(same.sum())
    rows = []
    for t in THRESHOLDS:
        found = scores >= t
        hits = int((found & same).sum())
        predicted = int(found.sum())
        precision = hits / predicted if predicted else 1.0
        recall = hits / positives
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"threshold": t, "precision": round(precision, 4),
                     "recall": round(recall, 4), "f1": round(f1, 4),
                     "false_pairs": predicted - hits})
    originals = np.flatnonzero(kind == "original")
    first = {int(source[i]): int(i) for i in originals}
    per_kind = {}
    for name in COPIES:
        copies = np.flatnonzero(kind == name)
        own = sims[copies, [first[int(source[c])] for c in copies]]
        per_kind[name] = {str(t): round(float((own >= t).mean()), 4) for t in THRESHOLDS}
        per_kind[name]["median_cosine"] = round(float(np.median(own)), 4)
    # The most similar distinct pair per original, for how near distinct images come.
    distinct = np.where(source[:, None] == source[None, :], -np.inf, sims)[originals][:,
                                                                                      originals]
    return {"pairs": len(scores), "true_pairs": positives, "curve": rows,
            "recall_by_copy": per_kind,
            "distinct_nearest_cosine_p50_p99": [
                round(float(np.quantile(distinct.max(axis=1), q)), 4) for q in (0.5, 0.99)]}


def choose(curve: list[dict], min_precision: float) -> dict:
    """The lowest threshold whose precision reaches `min_precision` (the most recall at it)."""
    passing = [r for r in curve if r["precision"] >= min_precision]
    return min(passing, key=lambda r: r["threshold"]) if passing else curve[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(CIFAR_ZIP))
    p.add_argument("--train-items", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--originals", type=int, default=1000)
    p.add_argument("--min-precision", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON report here")
    args = p.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as out:
        encoder, model_info = _train(args.data, args.train_items, args.epochs, out)
        model = EmbeddingModel.load(encoder, device="cpu", precision="fp32")
        blobs, source, kind = [], [], []
        for n, data in enumerate(_originals(args.data, args.originals, args.seed)):
            with Image.open(io.BytesIO(data)) as im:
                image = im.convert("RGB")
            blobs.append(data)
            source.append(n)
            kind.append("original")
            for name, copy in COPIES.items():
                blobs.append(copy(image))
                source.append(n)
                kind.append(name)
        vectors = np.concatenate([model.embed_files(blobs[i:i + 256])
                                  for i in range(0, len(blobs), 256)])
    figures = measure(vectors, np.asarray(source), np.asarray(kind))
    chosen = choose(figures["curve"], args.min_precision)
    results = {"data": args.data, "model": model_info, "originals": args.originals,
               "copies": list(COPIES), "items": len(blobs), **figures,
               "rule": f"lowest threshold with pair precision >= {args.min_precision}",
               "chosen": chosen, "wall_s": round(time.time() - t0, 1)}
    for row in figures["curve"]:
        print(f"t={row['threshold']:.3f} precision {row['precision']:.4f} recall "
              f"{row['recall']:.4f} f1 {row['f1']:.4f}", flush=True)
    print(f"chosen: {chosen}", flush=True)
    report("duplicates", results, args.out)


if __name__ == "__main__":
    main()
