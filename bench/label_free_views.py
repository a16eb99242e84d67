"""Label-free candidates that need more than one view per item, measured on the panels of
bench/label_free_panel.py (which cache the clean images and one view of each only).

    python -m bench.label_free_views --panel-seed 1 [--collections ...] [--out FILE]

Per encoder of a panel, on a sample of at most SAMPLE items:
  - `copy`: the label-free score as trainer/label_free.py computes it (an augmented copy
    looks for its image among the clean ones; mean log-rank), the reference;
  - `halves_lr`: each image's left half (resized to the whole) looks for its own right half
    among the sample's right halves: two pictures that share no pixel, only what they show,
    so matching pixels (what raw pixels and untrained networks win the copy retrieval with)
    no longer helps; `halves_lr_tb`: the mean of that and the same with top and bottom;
  - `copy_and_halves`: the mean of `copy` and `halves_lr`;
  - `halves_to_clean`: each half looks for its whole image;
  - `lidar`: LiDAR (Thilak et al., ICLR 2024): the effective rank of the LDA matrix
    Sigma_w^-1/2 Sigma_b Sigma_w^-1/2 with each item's VIEWS augmented copies as one class
    (ridge `delta` added to Sigma_w; raw pixels first projected on their top 128 principal
    directions, the embeddings' size);
  - `rankme`: the effective rank of the clean embeddings.
Each is compared with weighted-kNN top-1 on the labelled test split as bench/label_free.py
does: the share of the pairs of encoders more than 2 kNN points apart ordered the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import report
from bench.label_free import MIN_GAP, pairs_agreement
from bench.label_free_panel import COLLECTIONS, PANEL, collection_dir, encoder, panel_embeddings
from trainer.data import open_collection
from trainer.label_free import (
    AUGMENTATIONS,
    augmented_views,
    effective_rank,
    log_rank_score,
    retrieval_ranks,
)
from trainer.loader import Prepared, prepare

SAMPLE = 2_000
VIEWS = 6  # augmented copies per item for LiDAR
PIXEL_DIMS = 128  # raw pixels are projected on this many principal directions for LiDAR
Embed = Callable[[torch.Tensor], torch.Tensor]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)


def _resized(part: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    out = F.interpolate(part.float(), size=size, mode="bilinear", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def halves(images: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two halves of each uint8 image along `axis` (-1: left/right, -2: top/bottom),
    each resized back to the whole image's size."""
    mid, size = images.shape[axis] // 2, tuple(images.shape[-2:])
    first, second = images.split([mid, images.shape[axis] - mid], dim=axis)
    return _resized(first, size), _resized(second, size)  # type: ignore[arg-type]


def lidar(views: list[torch.Tensor], delta: float) -> float:
    """Effective rank of Sigma_w^-1/2 Sigma_b Sigma_w^-1/2, the views of an item one class."""
    z = torch.stack(views).double()  # views x items x dim
    means = z.mean(0)
    centred = means - means.mean(0)
    between = centred.t() @ centred / (len(means) - 1)
    spread = (z - means).reshape(-1, z.shape[-1])
    within = spread.t() @ spread / (len(spread) - 1)
    within += delta * torch.eye(z.shape[-1], dtype=torch.double)
    values, vectors = torch.linalg.eigh(within)
    inv_sqrt = vectors @ torch.diag(values.clamp(min=1e-12) ** -0.5) @ vectors.t()
    lam = torch.linalg.eigvalsh(inv_sqrt @ between @ inv_sqrt).clamp(min=0)
    p = lam / lam.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _retrieval(keys: torch.Tensor, queries: torch.Tensor) -> float:
    return log_rank_score(retrieval_ranks(keys, queries), len(keys))


def _forward(collection: str, name: str, prepared: Prepared, panel_seed: int,
             sample: torch.Tensor) -> Embed:
    """The member's unit embeddings; raw pixels projected on their top principal directions
    (of the clean sample), so that LiDAR's matrices are of the embeddings' size."""
    member = next(m for m in PANEL if m.name == name)
    raw = encoder(collection, member, prepared, lambda _: None, panel_seed)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.from_numpy(np.asarray(raw(x[i:i + 256]), dtype=np.float32))
                          for i in range(0, len(x), 256)])

    if member.kind != "pixels":
        return lambda x: _unit(embed(x))
    clean = embed(sample).double()
    mean = clean.mean(0, keepdim=True)
    basis = torch.linalg.svd(clean - mean, full_matrices=False)[2][:PIXEL_DIMS].t()
    return lambda x: _unit(((embed(x).double() - mean) @ basis).float())


def study(collection: str, panel_seed: int) -> dict:
    panel = panel_embeddings(collection, panel_seed=panel_seed, log=lambda _: None)
    prepared = prepare(open_collection(collection_dir(collection, panel_seed)), 32,
                       num_workers=0)
    assert prepared.images is not None
    rows = np.sort(np.random.default_rng(0).choice(
        len(prepared.images), min(SAMPLE, len(prepared.images)), replace=False))
    images = prepared.images[torch.from_numpy(rows)]
    copies = [augmented_views(images, AUGMENTATIONS["mild"], seed=10 + q) for q in range(VIEWS)]
    left, right = halves(images, -1)
    top, bottom = halves(images, -2)
    members: dict[str, dict[str, float]] = {}
    for name in panel:
        embed = _forward(collection, name, prepared, panel_seed, images)
        clean, seen = embed(images), [embed(v) for v in copies]
        le, ri, to, bo = (embed(x) for x in (left, right, top, bottom))
        copy, halves_lr = _retrieval(clean, seen[0]), _retrieval(ri, le)
        members[name] = {
            "knn_top1": panel[name]["knn_top1"], "copy": copy, "halves_lr": halves_lr,
            "halves_lr_tb": (halves_lr + _retrieval(bo, to)) / 2,
            "copy_and_halves": (copy + halves_lr) / 2,
            "halves_to_clean": float(np.mean([_retrieval(clean, x) for x in (le, ri, to, bo)])),
            "lidar": lidar(seen, 1e-4), "lidar_ridge_1e-2": lidar(seen, 1e-2),
            "rankme": effective_rank(clean),
        }
        print(f"  {collection}/{name}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in members[name].items()), flush=True)
    knn = [m["knn_top1"] for m in members.values()]
    agreement = {}
    for cand in next(iter(members.values())):
        if cand != "knn_top1":
            share, pairs, _ = pairs_agreement(knn, [m[cand] for m in members.values()])
            agreement[cand] = {"pairs_agreement": share, "pairs": pairs}
    return {"items": len(rows), "members": members, "agreement": agreement}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collections", nargs="+", choices=list(COLLECTIONS),
                   default=["cifar10", "cifar10-grey", "digits", "photo-patches"])
    p.add_argument("--panel-seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON report here")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {"panel_seed": args.panel_seed, "min_gap": MIN_GAP, "sample": SAMPLE,
               "views": VIEWS,
               "collections": {c: study(c, args.panel_seed) for c in args.collections}}
    report("label_free_views", results, args.out)
    colls = results["collections"]
    print(f"\n{'candidate':18s} " + " ".join(f"{c[:13]:>13s}" for c in colls) + "   mean  worst")
    for cand in next(iter(colls.values()))["agreement"]:
        shares = [100 * colls[c]["agreement"][cand]["pairs_agreement"] for c in colls]
        print(f"{cand:18s} " + " ".join(f"{s:13.1f}" for s in shares)
              + f" {np.mean(shares):6.1f} {min(shares):6.1f}")


if __name__ == "__main__":
    main()
