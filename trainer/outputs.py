"""What a training run leaves behind: the progress log and records, the embeddings, the
encoder, metrics.json, skipped.json and the curves."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from trainer import checkpoint
from trainer.augment import normalise
from trainer.backbones import Encoder
from trainer.device import Runtime
from trainer.encoder_file import EncoderMeta, save_encoder
from trainer.evaluation import headline, knn_evaluation
from trainer.label_free_baselines import LABEL_FREE_TERMS, MeasuredBaselines, run_figures
from trainer.loader import BatchReader, Prepared, embed_all
from trainer.progress import EpochRecord, plot_curves
from trainer.run_state import RunState

# Unreadable images named in metrics.json (and so in the job, the bundle's manifest and
# GET /models/{v}); every one of them is in skipped.json beside it.
SKIPPED_SHOWN = 20


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    replica_checks: int = 0  # steps after which the banks of all processes were compared


def encoder_forward(model: torch.nn.Module, rt: Runtime, mean: torch.Tensor,
                    std: torch.Tensor) -> Callable[[torch.Tensor], np.ndarray]:
    """uint8 batches -> the model's vectors, normalised as the run normalises (the caller puts
    the model in eval mode and turns gradients off)."""
    mean, std = mean.to(rt.device), std.to(rt.device)

    def forward(images: torch.Tensor) -> np.ndarray:
        x = rt.layout(normalise(rt.to_device(images), mean, std))
        with rt.autocast():
            return model(x).float().cpu().numpy()

    return forward


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no gradients while inside; training mode again after."""
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train()


def embed(model: torch.nn.Module, rt: Runtime, reader: BatchReader, mean: torch.Tensor,
          std: torch.Tensor, count: int, dim: int) -> np.ndarray:
    """Embeddings of the whole collection (evaluation split included), in eval mode."""
    with evaluating(model):
        return embed_all(reader, count, dim, encoder_forward(model, rt, mean, std))


def start_log(out: Path, state: RunState) -> None:
    """progress.jsonl rewritten from the checkpoint's history (so it never holds an epoch
    twice), and the run's config.json."""
    with open(out / "progress.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in state.history)
    (out / "config.json").write_text(json.dumps(state.config.to_dict(), indent=2) + "\n")


def epoch_record(state: RunState, lr: float, elapsed: float, knn: dict[str, Any] | None,
                 n_train: int, pixel_baseline: dict[str, Any] | None,
                 label_free: dict[str, Any] | None = None) -> dict[str, Any]:
    """The progress record of the epoch `state` just finished, `elapsed` seconds into the
    training. `label_free`: the label-free figures of the epoch (trainer.label_free_progress):
    the baselines every epoch, the model's score at evaluation epochs."""
    cfg, acc, hoods = state.config, state.acc, state.hoods
    assert hoods is not None
    epoch_time = acc.data_s + acc.backbone_s + acc.bank_s
    done_epochs = state.round * cfg.epochs_per_round + state.epoch
    top1, top5 = headline(knn)
    record = EpochRecord(
        round=state.round, rounds=cfg.rounds, epoch=state.epoch, epochs=cfg.epochs_per_round,
        loss=acc.loss_sum / max(acc.seen, 1), lr=lr,
        anchors=int(hoods.anchors.numel()), anchor_share=hoods.anchors.numel() / n_train,
        neighbourhood_quality=hoods.quality,
        images_per_s=acc.seen / max(epoch_time, 1e-9),
        elapsed_s=elapsed,
        eta_s=(cfg.total_epochs - done_epochs) * elapsed / max(done_epochs, 1),
        time_data_s=acc.data_s, time_backbone_s=acc.backbone_s, time_bank_s=acc.bank_s,
        time_discovery_s=state.discovery_s if state.epoch == 1 else 0.0,
        knn_top1=top1, knn_top5=top5, knn_protocol=knn["knn_protocol"] if knn else None,
        **(label_free or {}),
    ).to_dict()
    if pixel_baseline:
        record["pixel_knn_top1"] = pixel_baseline["pixel_knn_top1"]
    return record


def write_outputs(out: Path, state: RunState, prepared: Prepared, embeddings: np.ndarray,
                  rt: Runtime, processes: int, n_train: int,
                  pixel_baseline: dict[str, Any] | None, start: dict[str, Any] | None = None,
                  start_weights: Path | None = None,
                  measured: MeasuredBaselines | None = None) -> dict[str, Any]:
    """Encoder, embeddings, metrics (returned), skipped items and curves of a finished run.
    `start`: a pretrained start's figures and description (beside the baselines), and
    `start_weights` its file, whose network is scored without labels too. `measured`: the
    baselines' label-free scores the run already has (run_figures)."""
    cfg, coll, history = state.config, prepared.collection, state.history
    knn = knn_evaluation(embeddings, coll.labels, coll.is_eval, len(coll.classes),
                         cfg.knn_k, cfg.knn_sigma) or {}
    meta = EncoderMeta(
        backbone=cfg.backbone, dim=cfg.embedding_dim, image_size=cfg.input_size,
        mean=tuple(state.mean.tolist()), std=tuple(state.std.tolist()),
    )
    save_encoder(out / "encoder.pt", cast(Encoder, state.model), meta)
    np.savez(
        out / "embeddings.npz", vectors=embeddings, ids=np.asarray(coll.ids),
        labels=coll.labels, classes=np.asarray(coll.classes, dtype=str), is_eval=coll.is_eval,
    )
    # Beside the labelled figures, or alone without labels: the label-free score of the model,
    # of raw pixels and of the untrained network, on the same items and views.
    label_free = run_figures(out / "encoder.pt", prepared, embeddings, cfg.seed, str(rt.device),
                             start_weights, "bf16" if rt.bf16 else "fp32", measured,
                             terms_to=out / LABEL_FREE_TERMS)
    speeds = [r["images_per_s"] for r in history]
    metrics = {
        **knn,
        **(pixel_baseline or {}),
        **label_free,
        **(start or {}),
        "neighbourhood_quality": {
            str(r["round"]): r["neighbourhood_quality"]
            for r in history if r["epoch"] == 1 and r["round"] > 0
        },
        "final_loss": history[-1]["loss"] if history else None,
        "items": len(coll), "train_items": n_train,
        "eval_items": int(coll.is_eval.sum()), "skipped_items": len(coll.skipped),
        "skipped": [{"id": i, "reason": r} for i, r in coll.skipped[:SKIPPED_SHOWN]],
        "classes": len(coll.classes),
        "training_time_s": state.training_time,
        "images_per_s": float(np.median(speeds)) if speeds else None,
        "backbone": cfg.backbone, "device": str(rt.device),
        "processes": processes,
        "precision": "bf16" if rt.bf16 else "fp32",
        "rounds": cfg.rounds, "epochs_per_round": cfg.epochs_per_round,
        "init_from": cfg.init_from or None,
    }
    checkpoint.atomic_write_json(out / "metrics.json", metrics)
    if coll.skipped:
        checkpoint.atomic_write_json(
            out / "skipped.json", [{"id": i, "reason": r} for i, r in coll.skipped]
        )
    if history:
        plot_curves(history, out / "curves.png", title=f"AND on {coll.name} ({cfg.backbone})")
    return metrics
