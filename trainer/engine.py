"""The round/epoch loop of AND, with checkpoints that make a run resumable bit for bit.

    round 0            instance discrimination (every sample its own class)
    round r = 1..R-1   discover anchors + neighbourhoods on the bank, then train with Eq. 7
Each round restarts the learning-rate schedule; weights, bank and optimiser carry over.

A checkpoint after every epoch (and at most every `checkpoint_interval_s` mid-epoch, and when
asked to stop) holds everything the next step depends on: weights, optimiser, bank, round,
epoch, step, the epoch's sample order, anchors, neighbourhoods, the RNG state, the config and
the history. Running again on the same output folder continues from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import baseline, checkpoint
from trainer.augment import BatchAugment, normalise
from trainer.backbones import Encoder
from trainer.bank import MemoryBank
from trainer.collection import Collection
from trainer.config import TrainConfig
from trainer.device import Runtime, resolve
from trainer.discovery import Neighbourhoods, discover, no_neighbourhoods, positive_table
from trainer.distributed import Distributed, synchronise_batch_norm
from trainer.encoder_file import EncoderMeta, save_encoder
from trainer.errors import TrainerError, TrainingStopped
from trainer.evaluation import headline, knn_evaluation
from trainer.loader import BatchReader, embed_all, prepare, split_batches
from trainer.loss import and_loss, positives_of
from trainer.progress import EpochRecord, append_jsonl, plot_curves
from trainer.warm_start import load_initial_weights

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
COMPILE_MIN_STEPS = 2000  # below this the one-off compilation costs more than it saves


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    replica_checks: int = 0  # steps after which the banks of all processes were compared


class Trainer:
    """Train an encoder with AND on `dataset`, writing everything under `out_dir`.

    on_epoch(record): one progress record (dict) per finished epoch.
    on_status(phase, info): coarse phases ("decoding", "discovery", "embedding", ...).
    should_stop(): checked between batches; a non-empty string stops the run after a
        checkpoint with TrainingStopped(reason).
    """

    def __init__(self, config: TrainConfig, dataset: Collection, out_dir: str | Path, *,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 on_status: Callable[[str, dict[str, Any]], None] | None = None,
                 should_stop: Callable[[], str | None] | None = None,
                 profile: bool = False, max_steps: int | None = None,
                 init_weights: str | Path | None = None,
                 distributed: Distributed | None = None) -> None:
        self.config = config
        self.dataset = dataset
        self.out = Path(out_dir)
        # One process of several (trainer.distributed): rank 0 alone reports, writes and
        # decides when to stop; the others follow it.
        self.dist = distributed
        self.main = distributed is None or distributed.main
        self.on_epoch = (on_epoch if self.main else None) or (lambda record: None)
        self.on_status = (on_status if self.main else None) or (lambda phase, info: None)
        self.should_stop = (should_stop if self.main else None) or (lambda: None)
        self.profile = profile  # synchronise CUDA around phases so timings are exact
        self.max_steps = max_steps  # cut every epoch short (speed benchmarks, smoke runs)
        # The file behind config.init_from: the caller resolves a model version to its
        # encoder file; on its own, init_from is a path.
        self.init_weights = init_weights or config.init_from or None

    # --- public ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        cfg = self.config
        self._session_start = self._last_save = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        done = self._finished_result()
        if done is not None:
            return done
        self.on_status("decoding", {"items": len(self.dataset)})
        local = self.dist.local_world if self.dist else 1
        prepared = prepare(
            # Every process of a machine keeps its own cache: they share the budget, and a
            # collection that does not fit streams (decoded on the fly) instead.
            self.dataset, cfg.input_size, cache=cfg.cache_images,
            cache_max_gb=cfg.cache_max_gb / local,
            on_corrupt=cfg.on_corrupt, num_workers=cfg.num_workers,
            progress=lambda i, n: self.on_status("decoding", {"done": i, "items": n}),
        )
        self.prepared = prepared
        self.collection = prepared.collection
        # What raw pixels score with the same kNN: reported beside the model's accuracy.
        self.pixel_baseline = (baseline.measure(prepared, cfg.knn_k, cfg.knn_sigma)
                               if self.main else None)
        self.train_rows = self.collection.train_indices
        cfg.validate_for_dataset(len(self.train_rows))
        self.rt: Runtime = resolve(cfg.device, cfg.precision, cfg.channels_last)
        if self.dist is not None and self.rt.cuda:  # one GPU per process
            self.rt = Runtime(torch.device("cuda", self.dist.local_rank), self.rt.bf16,
                              self.rt.channels_last)
            torch.cuda.set_device(self.rt.device)
        self.reader = BatchReader(prepared, cfg.input_size, cfg.num_workers,
                                  pin_memory=self.rt.cuda)
        self._build()
        self._choose_forward()
        self._train()
        return self._finish()

    # --- state -----------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        ids = "\n".join(self.collection.ids[i] for i in self.train_rows)
        return hashlib.sha256(ids.encode()).hexdigest()[:16]

    def _build(self) -> None:
        cfg, n = self.config, len(self.train_rows)
        dev = self.rt.device
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        encoder = Encoder(cfg.backbone, cfg.embedding_dim)
        if self.dist is not None and cfg.sync_bn:
            encoder = synchronise_batch_norm(encoder, self.rt.cuda)
        self.model = self.rt.prepare(encoder)
        self.bank = MemoryBank(n, cfg.embedding_dim, cfg.bank_momentum, self.gen).to(dev)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
        self.train_labels = torch.from_numpy(self.collection.labels[self.train_rows]).to(dev)
        self.round, self.epoch, self.step = 0, 0, 0
        self.order: np.ndarray | None = None
        self.hoods: Neighbourhoods | None = no_neighbourhoods(n, dev)
        self.history: list[dict[str, Any]] = []
        self.elapsed = 0.0
        self.discovery_s = 0.0
        self.embeddings: np.ndarray | None = None
        self.acc = _EpochAccumulator()
        path = self.out / CHECKPOINT
        if path.exists():
            self._restore(checkpoint.load(path))
            log.info("resuming %s at round %d epoch %d step %d", self.out, self.round,
                     self.epoch, self.step)
        elif self.init_weights:
            self._warm_start(self.init_weights)
        # After the restore: a resumed run normalises with the statistics it started with.
        self.augment = BatchAugment(
            cfg.input_size, self.prepared.mean.to(dev), self.prepared.std.to(dev),
            crop_scale_min=cfg.crop_scale_min, jitter=cfg.color_jitter,
            grayscale_p=cfg.grayscale_p,
        )
        self.step_model: torch.nn.Module = self.model
        self.replica_checks = 0
        if self.dist is not None:
            # Every process starts from rank 0's bank (a warm start embeds on rank 0 only);
            # DDP starts every replica from rank 0's weights and keeps batch-norm buffers
            # equal (broadcast from rank 0 at every forward pass).
            self.dist.broadcast_(self.bank.vectors)
            self.step_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.rt.device.index] if self.rt.cuda else None)
        if not self.main:
            return
        # The log is rewritten from the checkpoint, so it never holds an epoch twice.
        with open(self.out / "progress.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in self.history)
        (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    def _warm_start(self, weights: str | Path) -> None:
        """Start from existing weights; the bank starts as their embeddings of the training
        images (rather than random vectors), so round 0 begins where those weights are."""
        loaded = load_initial_weights(self.model, weights)
        log.info("starting from %s", loaded)
        if not self.main:
            return  # rank 0's bank is broadcast
        vectors = self._embed_all()[self.train_rows]
        self.bank.vectors.copy_(torch.from_numpy(vectors).to(self.rt.device))

    def _state(self) -> dict[str, Any]:
        h = self.hoods
        return {
            "format": 1,
            "config": self.config.to_dict(),
            "fingerprint": self._fingerprint(),
            "round": self.round, "epoch": self.epoch, "step": self.step,
            "order": self.order,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "bank": self.bank.vectors.cpu(),
            "hoods": None if h is None else {
                "anchors": h.anchors.cpu(), "neighbours": h.neighbours.cpu(),
                "quality": h.quality, "entropy_mean": h.entropy_mean,
            },
            "discovery_s": self.discovery_s,
            "rng": self.gen.get_state(),
            "accumulator": self.acc.__dict__.copy(),
            "history": self.history,
            "elapsed": self.elapsed + self._session_time(),
            "mean": self.prepared.mean, "std": self.prepared.std,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        saved = TrainConfig.from_dict(state["config"])
        theirs, ours = saved.training_identity(), self.config.training_identity()
        changed = sorted(k for k in ours if theirs.get(k) != ours[k])
        if changed:
            raise TrainerError(
                f"{self.out} holds a run with a different config ({', '.join(changed)} "
                "differ); use a new output folder or the same settings"
            )
        if state["fingerprint"] != self._fingerprint():
            raise TrainerError(
                f"{self.out} holds a run on a different set of images; use a new output folder"
            )
        dev = self.rt.device
        self.round, self.epoch, self.step = state["round"], state["epoch"], state["step"]
        self.order = state["order"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.bank.vectors.copy_(state["bank"].to(dev))
        h = state["hoods"]
        n = len(self.train_rows)
        if h is None:
            self.hoods = None
        elif h["anchors"].numel() == 0:
            self.hoods = no_neighbourhoods(n, dev)
        else:
            anchors, neighbours = h["anchors"].to(dev), h["neighbours"].to(dev)
            self.hoods = Neighbourhoods(anchors, neighbours,
                                        positive_table(n, anchors, neighbours),
                                        h["quality"], h["entropy_mean"])
        self.discovery_s = state["discovery_s"]
        self.gen.set_state(state["rng"])
        self.acc = _EpochAccumulator(**state["accumulator"])
        self.history = state["history"]
        self.elapsed = state["elapsed"]
        # The decoding pass measured the same images: keep the statistics training started with.
        self.prepared.mean.copy_(state["mean"])
        self.prepared.std.copy_(state["std"])

    def _save(self, extra_name: str | None = None) -> None:
        if not self.main:  # rank 0 alone writes; every replica holds the same state
            self._last_save = time.monotonic()
            return
        state = self._state()
        checkpoint.save(self.out / CHECKPOINT, state)
        if extra_name:
            checkpoint.save(self.out / extra_name, state)
        self._last_save = time.monotonic()

    def _choose_forward(self) -> None:
        """The eager model, or a compiled one for long CUDA runs (compiled once per input
        shape: only full batches use it, the last short batch of an epoch runs eager). On CPU
        `auto` stays eager: measured within +-8 % of eager (docs/benchmarks.md), not worth a
        one-off compilation and a C compiler."""
        cfg, n = self.config, len(self.train_rows)
        steps = cfg.total_epochs * max(1, n // cfg.batch_size)
        has_cc = shutil.which("cc") is not None or shutil.which("gcc") is not None
        want = cfg.compile == "always" or (
            cfg.compile == "auto" and self.rt.cuda and steps >= COMPILE_MIN_STEPS and has_cc)
        base = self.step_model
        self.train_forward: torch.nn.Module = torch.compile(base) if want else base
        self._compiled_checked = not want

    def _forward_backward(self, x: torch.Tensor, index: torch.Tensor,
                          positives: torch.Tensor, full: bool, scale: float = 1.0) -> _StepOut:
        net = self.train_forward if full else self.step_model
        if net is self.step_model or self._compiled_checked:
            return self._step_parts(net, x, index, positives, scale)
        try:
            out = self._step_parts(net, x, index, positives, scale)
        except Exception:
            # Compilation failed (no compiler, an unsupported op): train eagerly instead.
            # Nothing was applied yet: the optimiser steps after a successful backward pass.
            log.warning("torch.compile failed; training without it", exc_info=True)
            self.train_forward = self.step_model
            self.optimizer.zero_grad(set_to_none=True)
            out = self._step_parts(self.step_model, x, index, positives, scale)
        self._compiled_checked = True
        return out

    def _step_parts(self, net: torch.nn.Module, x: torch.Tensor, index: torch.Tensor,
                    positives: torch.Tensor, scale: float = 1.0) -> _StepOut:
        """Forward, loss, and the backward pass split at the features (timed apart).
        `scale` weights this process's loss (the mean over its slice) so that DDP's average
        over processes is the mean over the global batch."""
        t1 = time.perf_counter()
        with self.rt.autocast():
            features = net(x)
        feats = features.detach().requires_grad_(True)
        self._sync()
        t2 = time.perf_counter()
        loss = and_loss(feats, self.bank.vectors, positives_of(index, positives),
                        self.config.tau)
        (loss * scale if scale != 1.0 else loss).backward()
        self._sync()
        t3 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        features.backward(feats.grad)
        self.optimizer.step()
        self._sync()
        t4 = time.perf_counter()
        return _StepOut(feats.detach(), loss.detach(), (t1, t2, t3, t4))

    # --- the loop --------------------------------------------------------------------------
    def _session_time(self) -> float:
        return time.monotonic() - self._session_start

    def _train(self) -> None:
        cfg = self.config
        while self.round < cfg.rounds:
            if self.hoods is None:
                self._discover()
            while self.epoch < cfg.epochs_per_round:
                self._train_epoch()
            self.round += 1
            self.epoch = 0
            self.hoods = None

    def _discover(self) -> None:
        cfg, n = self.config, len(self.train_rows)
        count = cfg.anchor_count(self.round, n)
        self.on_status("discovery", {"round": self.round, "anchors": count})
        t0 = time.perf_counter()
        labels = self.train_labels if self.collection.has_labels else None
        if self.dist is None:
            self.hoods = discover(self.bank.vectors, count, cfg.neighbours, cfg.tau, labels)
        else:
            self.hoods = self._discover_on_rank0(count, labels)
        self._sync()
        self.discovery_s = time.perf_counter() - t0
        log.info("round %d: %d anchors, neighbourhood quality %s, %.1fs", self.round, count,
                 self.hoods.quality, self.discovery_s)
        self._save()

    def _discover_on_rank0(self, count: int, labels: torch.Tensor | None) -> Neighbourhoods:
        """Rank 0 discovers on its bank and broadcasts anchors and neighbours: every process
        then builds the same positive table (no process relies on its own floating-point
        ties coming out the same)."""
        cfg, n, dev = self.config, len(self.train_rows), self.rt.device
        assert self.dist is not None
        if self.main:
            hoods = discover(self.bank.vectors, count, cfg.neighbours, cfg.tau, labels)
            anchors, neighbours = hoods.anchors.contiguous(), hoods.neighbours.contiguous()
        else:
            hoods = None
            anchors = torch.empty(count, dtype=torch.long, device=dev)
            neighbours = torch.empty(count, cfg.neighbours, dtype=torch.long, device=dev)
        self.dist.broadcast_(anchors)
        self.dist.broadcast_(neighbours)
        if hoods is not None:
            return hoods
        return Neighbourhoods(anchors, neighbours, positive_table(n, anchors, neighbours),
                              None, 0.0)

    def _sync(self) -> None:
        if self.rt.cuda and self.profile:
            torch.cuda.synchronize()

    def _train_epoch(self) -> None:
        cfg, n = self.config, len(self.train_rows)
        lr = cfg.lr_at(self.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.step == 0:
            self.order = torch.randperm(n, generator=self.gen).numpy()
            self.acc = _EpochAccumulator()
        assert self.order is not None and self.hoods is not None
        self.embeddings = None
        world = self.dist.world if self.dist else 1
        # A collection smaller than a batch trains in one batch per epoch.
        full_batch = min(cfg.batch_size, n)
        batches = split_batches(self.order, full_batch, min_last=2 * world)[:self.max_steps]
        # Each process reads and trains on its slice of every global batch.
        mine = [b[slice(*self._bounds(len(b)))] for b in batches]
        positives = self.hoods.positives
        dev = self.rt.device
        acc = self.acc
        loss_sum = torch.zeros((), device=dev)
        self.model.train()
        t_prev = time.perf_counter()
        for _, images in self.reader([self.train_rows[b] for b in mine[self.step:]]):
            batch = batches[self.step]
            lo, hi = self._bounds(len(batch))
            index = torch.from_numpy(batch[lo:hi]).to(dev, non_blocking=True)
            x = self.rt.layout(self.augment(self.rt.to_device(images), self.gen,
                                            total=len(batch), start=lo))
            self._sync()
            out = self._forward_backward(x, index, positives, full=len(batch) == full_batch,
                                         scale=world * (hi - lo) / len(batch))
            t1, t2, t3, t4 = out.times
            loss_sum += out.loss * (hi - lo)
            if self.dist is None:
                self.bank.update(index, out.features)
            else:
                # One bank: every process applies the whole global batch's update.
                features = self.dist.gather_batch(out.features, len(batch))
                self.bank.update(torch.from_numpy(batch).to(dev, non_blocking=True), features)
                if self.dist.check_replicas:
                    self.dist.assert_replicas_equal(
                        self.bank.vectors, f"round {self.round} epoch {self.epoch} step "
                        f"{self.step}")
                    self.replica_checks += 1
            self._sync()
            t5 = time.perf_counter()
            acc.data_s += t1 - t_prev  # waiting for the batch, then augmenting it
            acc.backbone_s += (t2 - t1) + (t4 - t3)
            acc.bank_s += (t3 - t2) + (t5 - t4)
            acc.seen += len(batch)
            self.step += 1
            reason, save = self._stop_or_save()
            if save:
                acc.loss_sum += self._global_sum(loss_sum)
                loss_sum.zero_()
                self._save()
                if reason:
                    raise TrainingStopped(reason)
            t_prev = time.perf_counter()
        acc.loss_sum += self._global_sum(loss_sum)
        self._end_epoch(lr)

    def _bounds(self, batch: int) -> tuple[int, int]:
        return self.dist.bounds(batch) if self.dist else (0, batch)

    def _global_sum(self, value: torch.Tensor) -> float:
        if self.dist is not None:
            value = self.dist.sum_(value.detach().clone().reshape(1))
        return float(value.sum())

    def _stop_or_save(self) -> tuple[str | None, bool]:
        """(stop reason, checkpoint now), decided by rank 0 and known to every process."""
        reason = self.should_stop()
        save = bool(reason) or (
            time.monotonic() - self._last_save > self.config.checkpoint_interval_s)
        if self.dist is None:
            return reason, save
        return self.dist.stop_decision(reason, save, self.rt.device)

    def _end_epoch(self, lr: float) -> None:
        cfg, acc = self.config, self.acc
        self.epoch += 1
        self.step = 0
        self.order = None
        epoch_time = acc.data_s + acc.backbone_s + acc.bank_s
        elapsed = self.elapsed + self._session_time()
        done_epochs = self.round * cfg.epochs_per_round + self.epoch
        remaining = cfg.total_epochs - done_epochs
        knn: dict[str, Any] | None = None
        last_of_round = self.epoch == cfg.epochs_per_round
        periodic = cfg.knn_every_epochs > 0 and done_epochs % cfg.knn_every_epochs == 0
        if ((periodic or (last_of_round and cfg.eval_each_round)) and self.collection.has_labels
                and self.main):
            self.embeddings = self._embed_all()
            knn = knn_evaluation(self.embeddings, self.collection.labels, self.collection.is_eval,
                                 len(self.collection.classes), cfg.knn_k, cfg.knn_sigma)
        top1, top5 = headline(knn)
        n = len(self.train_rows)
        hoods = self.hoods
        assert hoods is not None
        record = EpochRecord(
            round=self.round, rounds=cfg.rounds, epoch=self.epoch, epochs=cfg.epochs_per_round,
            loss=acc.loss_sum / max(acc.seen, 1), lr=lr,
            anchors=int(hoods.anchors.numel()), anchor_share=hoods.anchors.numel() / n,
            neighbourhood_quality=hoods.quality,
            images_per_s=acc.seen / max(epoch_time, 1e-9),
            elapsed_s=elapsed,
            eta_s=remaining * elapsed / max(done_epochs, 1),
            time_data_s=acc.data_s, time_backbone_s=acc.backbone_s, time_bank_s=acc.bank_s,
            time_discovery_s=self.discovery_s if self.epoch == 1 else 0.0,
            knn_top1=top1, knn_top5=top5, knn_protocol=knn["knn_protocol"] if knn else None,
        ).to_dict()
        if self.pixel_baseline:
            record["pixel_knn_top1"] = self.pixel_baseline["pixel_knn_top1"]
        self.history.append(record)
        self.acc = _EpochAccumulator()
        round_file = f"checkpoint_round{self.round}.pt" if last_of_round else None
        self._save(round_file)
        if self.main:
            append_jsonl(self.out / "progress.jsonl", record)
        self.on_epoch(record)

    # --- embedding and outputs -------------------------------------------------------------
    @torch.no_grad()
    def _embed_all(self) -> np.ndarray:
        self.on_status("embedding", {"items": len(self.collection)})
        mean, std = self.prepared.mean.to(self.rt.device), self.prepared.std.to(self.rt.device)

        def forward(images: torch.Tensor) -> np.ndarray:
            x = self.rt.layout(normalise(self.rt.to_device(images), mean, std))
            with self.rt.autocast():
                return self.model(x).float().cpu().numpy()

        self.model.eval()
        try:
            return embed_all(self.reader, len(self.collection), self.config.embedding_dim,
                             forward)
        finally:
            self.model.train()

    def _finish(self) -> RunResult:
        cfg, coll = self.config, self.collection
        if not self.main:  # rank 0 writes the outputs
            return RunResult(self.out, {}, self.history, self.replica_checks)
        embeddings = self.embeddings  # from the evaluation after the last epoch, if any
        if embeddings is None:
            embeddings = self._embed_all()
        knn = knn_evaluation(embeddings, coll.labels, coll.is_eval, len(coll.classes),
                             cfg.knn_k, cfg.knn_sigma) or {}
        meta = EncoderMeta(
            backbone=cfg.backbone, dim=cfg.embedding_dim, image_size=cfg.input_size,
            mean=tuple(self.prepared.mean.tolist()), std=tuple(self.prepared.std.tolist()),
        )
        save_encoder(self.out / "encoder.pt", self.model, meta)
        np.savez(
            self.out / "embeddings.npz", vectors=embeddings, ids=np.asarray(coll.ids),
            labels=coll.labels, classes=np.asarray(coll.classes, dtype=str),
            is_eval=coll.is_eval,
        )
        speeds = [r["images_per_s"] for r in self.history]
        metrics = {
            **knn,
            **(self.pixel_baseline or {}),
            "neighbourhood_quality": {
                str(r["round"]): r["neighbourhood_quality"]
                for r in self.history if r["epoch"] == 1 and r["round"] > 0
            },
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "items": len(coll), "train_items": len(self.train_rows),
            "eval_items": int(coll.is_eval.sum()), "skipped_items": len(coll.skipped),
            "classes": len(coll.classes),
            "training_time_s": self.elapsed + self._session_time(),
            "images_per_s": float(np.median(speeds)) if speeds else None,
            "backbone": cfg.backbone, "device": str(self.rt.device),
            "processes": self.dist.world if self.dist else 1,
            "precision": "bf16" if self.rt.bf16 else "fp32",
            "rounds": cfg.rounds, "epochs_per_round": cfg.epochs_per_round,
            "init_from": cfg.init_from or None,
        }
        checkpoint.atomic_write_json(self.out / "metrics.json", metrics)
        if coll.skipped:
            checkpoint.atomic_write_json(
                self.out / "skipped.json", [{"id": i, "reason": r} for i, r in coll.skipped]
            )
        if self.history:
            plot_curves(self.history, self.out / "curves.png",
                        title=f"AND on {coll.name} ({cfg.backbone})")
        self.on_status("done", {"metrics": metrics})
        return RunResult(self.out, metrics, self.history, self.replica_checks)

    def _finished_result(self) -> RunResult | None:
        """A finished run in `out` with the same config is returned, not trained again."""
        metrics_path, ckpt_path = self.out / "metrics.json", self.out / CHECKPOINT
        needed = (metrics_path, ckpt_path, self.out / "encoder.pt")
        if not all(p.exists() for p in needed):
            return None
        state = checkpoint.load(ckpt_path)
        if not _complete(state):
            return None
        saved = TrainConfig.from_dict(state["config"]).training_identity()
        if saved != self.config.training_identity():
            raise TrainerError(f"{self.out} holds a finished run with a different config; "
                               "use a new output folder")
        return RunResult(self.out, json.loads(metrics_path.read_text()), state["history"])


@dataclass
class _StepOut:
    features: torch.Tensor  # detached, for the bank update
    loss: torch.Tensor
    times: tuple[float, float, float, float]  # forward start, loss, bank backward, step done


@dataclass
class _EpochAccumulator:
    loss_sum: float = 0.0
    seen: int = 0
    data_s: float = 0.0
    backbone_s: float = 0.0
    bank_s: float = 0.0


def _complete(state: dict[str, Any]) -> bool:
    cfg = state["config"]
    return state["round"] >= cfg["rounds"] - 1 and state["epoch"] >= cfg["epochs_per_round"]
