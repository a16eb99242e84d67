"""The round/epoch/step loop of AND (AND_SPEC.md):

    round 0            instance discrimination (every sample its own class)
    round r = 1..R-1   discover anchors + neighbourhoods on the bank, then train with Eq. 7
Each round restarts the learning-rate schedule; weights, bank and optimiser carry over.

Everything the next step depends on is one `RunState`, checkpointed after every epoch, at
most every `checkpoint_interval_s` mid-epoch and when asked to stop (trainer.run_state);
running again on the same output folder continues from it bit for bit. The step itself and
the choice to compile it live in trainer.step and trainer.compile_choice, the files a run
leaves behind in trainer.outputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from trainer import baseline, checkpoint, pretrained
from trainer.augment import BatchAugment
from trainer.backbones import Encoder
from trainer.bank import MemoryBank
from trainer.collection import Collection
from trainer.compile_choice import compiled_forward
from trainer.config import TrainConfig
from trainer.cpu_threads import cpu_threads
from trainer.device import Runtime, resolve
from trainer.discovery import discover, no_neighbourhoods
from trainer.distributed import Distributed, discover_on_rank0, synchronise_batch_norm
from trainer.errors import TrainingStopped
from trainer.evaluation import knn_evaluation
from trainer.label_free_progress import ProgressScore, run_meta
from trainer.loader import BatchReader, Prepared, prepare, split_batches
from trainer.outputs import RunResult, embed, epoch_record, start_log, write_outputs
from trainer.progress import append_jsonl
from trainer.run_state import Checkpoints, EpochAccumulator, RunState, finished_run
from trainer.run_state import fingerprint as ids_fingerprint
from trainer.step import StepOut, TrainStep
from trainer.warm_start import load_initial_weights
from trainer.warm_start import resolve as resolve_weights

log = logging.getLogger(__name__)


class Trainer:
    """Train an encoder with AND on `dataset`, writing everything under `out_dir`.

    on_epoch(record): one progress record (dict) per finished epoch.
    on_status(phase, info): coarse phases ("decoding", "discovery", "embedding", ...).
    should_stop(): checked between batches; a non-empty string stops the run after a
        checkpoint with TrainingStopped(reason).
    """

    # Set by run(), once the dataset is decoded.
    prepared: Prepared  # the decoded collection, its channel statistics and cache
    rt: Runtime
    reader: BatchReader
    train_rows: np.ndarray  # rows of the collection trained on (the bank's rows, in order)
    pixel_baseline: dict[str, Any] | None  # what raw pixels score with the same kNN
    # A pretrained start's weights, kNN figures and description (for metrics.json).
    start_figures: dict[str, Any]
    progress_score: ProgressScore | None  # the label-free score at evaluation epochs (rank 0)
    state: RunState
    checkpoints: Checkpoints
    augment: BatchAugment
    step: TrainStep

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
        self.world = distributed.world if distributed else 1
        self.on_epoch = (on_epoch if self.main else None) or (lambda record: None)
        self.on_status = (on_status if self.main else None) or (lambda phase, info: None)
        self.should_stop = (should_stop if self.main else None) or (lambda: None)
        self.profile = profile  # synchronise CUDA around phases so timings are exact
        self.max_steps = max_steps  # cut every epoch short (speed benchmarks, smoke runs)
        # The file behind config.init_from: the caller resolves a model version to its
        # encoder file; on its own, init_from is a path, or imagenet (trainer.pretrained).
        self.init_weights = init_weights or (resolve_weights(
            config.init_from, backbone=config.backbone) if config.init_from else None)
        self.start_weights = (Path(self.init_weights) if self.init_weights and
                              config.init_from == pretrained.IMAGENET else None)
        self.start_embeddings: np.ndarray | None = None  # the starting network's, all items
        self.embeddings: np.ndarray | None = None  # of the last epoch's evaluation, if any
        self.replica_checks = 0  # steps after which the banks of all processes were compared

    # --- the run ---------------------------------------------------------------------------
    def run(self) -> RunResult:
        started = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        done = finished_run(self.out, self.config)
        if done is not None:
            return RunResult(self.out, *done)
        with cpu_threads(self.config.cpu_threads):
            self._prepare()
            self._build(started)
            self._train()
            return self._finish()

    def _train(self) -> None:
        cfg, s = self.config, self.state
        while s.round < cfg.rounds:
            if s.hoods is None:
                self._discover()
            while s.epoch < cfg.epochs_per_round:
                self._train_epoch()
            s.round += 1
            s.epoch = 0
            s.hoods = None

    def _discover(self) -> None:
        cfg, s, n = self.config, self.state, len(self.train_rows)
        count = cfg.anchor_count(s.round, n)
        self.on_status("discovery", {"round": s.round, "anchors": count})
        t0 = time.perf_counter()
        collection = self.prepared.collection
        labels = (torch.from_numpy(collection.labels[self.train_rows]).to(self.rt.device)
                  if collection.has_labels else None)  # scores the neighbourhoods only
        if self.dist is None:
            s.hoods = discover(s.bank.vectors, count, cfg.neighbours, cfg.tau, labels)
        else:
            s.hoods = discover_on_rank0(self.dist, s.bank.vectors, count, cfg.neighbours,
                                        cfg.tau, labels)
        self.step.sync()
        s.discovery_s = time.perf_counter() - t0
        log.info("round %d: %d anchors, neighbourhood quality %s, %.1fs", s.round, count,
                 s.hoods.quality, s.discovery_s)
        self.checkpoints.save(s)

    def _train_epoch(self) -> None:
        cfg, s, n, dev = self.config, self.state, len(self.train_rows), self.rt.device
        lr = cfg.lr_at(s.epoch)
        for group in s.optimizer.param_groups:
            group["lr"] = lr
        if s.step == 0:
            s.order = torch.randperm(n, generator=s.gen).numpy()
            s.acc = EpochAccumulator()
        assert s.order is not None and s.hoods is not None
        self.embeddings = None
        # A collection smaller than a batch trains in one batch per epoch.
        full_batch = min(cfg.batch_size, n)
        batches = split_batches(s.order, full_batch, min_last=2 * self.world)[:self.max_steps]
        # Each process reads and trains on its slice of every global batch.
        mine = [b[slice(*self._bounds(len(b)))] for b in batches]
        # In float64, where a sum of fp32 losses is exact whatever the grouping: a run resumed
        # mid-epoch (its sum flushed at the checkpoint) records the epoch loss of a whole run.
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        s.model.train()
        t_prev = time.perf_counter()
        for _, images in self.reader([self.train_rows[b] for b in mine[s.step:]]):
            batch = batches[s.step]
            lo, hi = self._bounds(len(batch))
            index = torch.from_numpy(batch[lo:hi]).to(dev, non_blocking=True)
            x = self.rt.layout(self.augment(self.rt.to_device(images), s.gen,
                                            total=len(batch), start=lo))
            self.step.sync()
            out = self.step(x, index, s.hoods.positives, full=len(batch) == full_batch,
                            scale=self.world * (hi - lo) / len(batch))
            loss_sum += out.loss.double() * (hi - lo)
            self._update_bank(batch, index, out)
            self.step.sync()
            self._time_step(out, t_prev, len(batch))
            s.step += 1
            reason, save = self._stop_or_save()
            if save:
                s.acc.loss_sum += self._global_sum(loss_sum)
                loss_sum.zero_()
                self.checkpoints.save(s)
                if reason:
                    raise TrainingStopped(reason)
            t_prev = time.perf_counter()
        s.acc.loss_sum += self._global_sum(loss_sum)
        self._end_epoch(lr)

    def _end_epoch(self, lr: float) -> None:
        cfg, s = self.config, self.state
        s.epoch += 1
        s.step = 0
        s.order = None
        elapsed = s.training_time
        done_epochs = s.round * cfg.epochs_per_round + s.epoch
        last_of_round = s.epoch == cfg.epochs_per_round
        periodic = cfg.knn_every_epochs > 0 and done_epochs % cfg.knn_every_epochs == 0
        coll = self.prepared.collection
        knn: dict[str, Any] | None = None
        evaluate = (periodic or (last_of_round and cfg.eval_each_round)) and self.main
        if evaluate and coll.has_labels:
            self.embeddings = self._embed_all()
            knn = knn_evaluation(self.embeddings, coll.labels, coll.is_eval, len(coll.classes),
                                 cfg.knn_k, cfg.knn_sigma)
        # Measured at the same epochs, labels or not: the one figure an unlabelled run has.
        score = self.progress_score
        label_free = dict(score.baselines) if score else {}
        if evaluate and score:
            self.on_status("scoring", {"items": label_free["label_free_items"]})
            label_free["label_free"] = score(s.model, s.mean, s.std, self.embeddings)
        record = epoch_record(s, lr, elapsed, knn, len(self.train_rows), self.pixel_baseline,
                              label_free)
        s.history.append(record)
        s.acc = EpochAccumulator()
        self.checkpoints.save(s, f"checkpoint_round{s.round}.pt" if last_of_round else None)
        if self.main:
            append_jsonl(self.out / "progress.jsonl", record)
        self.on_epoch(record)

    def _finish(self) -> RunResult:
        if not self.main:  # rank 0 writes the outputs
            return RunResult(self.out, {}, self.state.history, self.replica_checks)
        # From the evaluation after the last epoch, if any.
        embeddings = self.embeddings if self.embeddings is not None else self._embed_all()
        metrics = write_outputs(self.out, self.state, self.prepared, embeddings,
                                self.rt, self.world, len(self.train_rows), self.pixel_baseline,
                                self.start_figures, self.start_weights,
                                self.progress_score.measured if self.progress_score else None)
        self.on_status("done", {"metrics": metrics})
        return RunResult(self.out, metrics, self.state.history, self.replica_checks)

    # --- setting up ------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Decode the dataset once, then choose where and how the model runs."""
        cfg = self.config
        self.on_status("decoding", {"items": len(self.dataset)})
        local = self.dist.local_world if self.dist else 1
        self.prepared = prepare(
            # Every process of a machine keeps its own cache: they share the budget, and a
            # collection that does not fit streams (decoded on the fly) instead.
            self.dataset, cfg.input_size, cache=cfg.cache_images,
            cache_max_gb=cfg.cache_max_gb / local,
            on_corrupt=cfg.on_corrupt, num_workers=cfg.num_workers,
            progress=lambda i, n: self.on_status("decoding", {"done": i, "items": n}),
        )
        # What raw pixels score with the same kNN: reported beside the model's accuracy.
        self.pixel_baseline = (baseline.measure(self.prepared, cfg.knn_k, cfg.knn_sigma)
                               if self.main else None)
        self.train_rows = self.prepared.collection.train_indices
        cfg.validate_for_dataset(len(self.train_rows))
        self.rt = resolve(cfg.device, cfg.precision, cfg.channels_last)
        if self.dist is not None and self.rt.cuda:  # one GPU per process
            self.rt = Runtime(torch.device("cuda", self.dist.local_rank), self.rt.bf16,
                              self.rt.channels_last)
            torch.cuda.set_device(self.rt.device)
        self.reader = BatchReader(self.prepared, cfg.input_size, cfg.num_workers,
                                  pin_memory=self.rt.cuda)

    def _build(self, started: float) -> None:
        """The method's parts (encoder, bank, optimiser), restored from the checkpoint when
        there is one, and the step that trains them."""
        cfg, n, dev = self.config, len(self.train_rows), self.rt.device
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        encoder: torch.nn.Module = Encoder(cfg.backbone, cfg.embedding_dim)
        if self.dist is not None and cfg.sync_bn:
            encoder = synchronise_batch_norm(encoder, self.rt.cuda)
        model = self.rt.prepare(encoder)
        bank = MemoryBank(n, cfg.embedding_dim, cfg.bank_momentum, gen).to(dev)
        optimizer = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
        ids = self.prepared.collection.ids
        mean, std = pretrained.normalisation(cfg.init_from, cfg.backbone, self.prepared.mean,
                                             self.prepared.std)
        s = self.state = RunState(
            cfg, ids_fingerprint([ids[i] for i in self.train_rows]), model, optimizer, bank,
            gen, mean, std, no_neighbourhoods(n, dev), started=started)
        self.checkpoints = Checkpoints(self.out, cfg.checkpoint_interval_s, self.main, started)
        if self.checkpoints.path.exists():
            s.restore(checkpoint.load(self.checkpoints.path), self.out)
            log.info("resuming %s at round %d epoch %d step %d", self.out, s.round, s.epoch,
                     s.step)
        elif self.init_weights:
            self._warm_start(self.init_weights)
        elif cfg.bank_init == "embeddings":
            self._bank_from_start()
        # After the restore: a resumed run normalises with the statistics it started with.
        self.augment = BatchAugment(
            cfg.input_size, s.mean.to(dev), s.std.to(dev), crop_scale_min=cfg.crop_scale_min,
            jitter=cfg.color_jitter, grayscale_p=cfg.grayscale_p,
        )
        trained = model
        if self.dist is not None:
            # Every process starts from rank 0's bank (a warm start embeds on rank 0 only);
            # DDP starts every replica from rank 0's weights and keeps batch-norm buffers
            # equal (broadcast from rank 0 at every forward pass).
            self.dist.broadcast_(bank.vectors)
            trained = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[dev.index] if self.rt.cuda else None)
        if self.main:
            start_log(self.out, s)
            self.progress_score = ProgressScore(
                self.prepared, run_meta(cfg.backbone, cfg.embedding_dim, cfg.input_size, s.mean,
                                        s.std), self.rt, init_seed=cfg.seed,
                start_weights=self.start_weights)
        else:
            self.progress_score = None
        self._measure_start()
        self.step = TrainStep(trained, compiled_forward(trained, cfg, self.rt.cuda, n),
                              optimizer, bank, cfg.tau, self.rt, self.profile)

    def _warm_start(self, weights: str | Path) -> None:
        """Start from existing weights, the bank from their embeddings."""
        loaded = load_initial_weights(cast(Encoder, self.state.model), weights)
        log.info("starting from %s", loaded)
        self._bank_from_start()

    def _bank_from_start(self) -> None:
        """The bank starts as the starting network's embeddings of the training images
        (rather than random vectors), so round 0 begins where that network is."""
        if not self.main:
            return  # rank 0's bank is broadcast
        self.start_embeddings = self._embed_all()
        vectors = self.start_embeddings[self.train_rows]
        self.state.bank.vectors.copy_(torch.from_numpy(vectors).to(self.rt.device))

    def _measure_start(self) -> None:
        """A pretrained start's figures beside the model's: the kNN of the network the run
        started from (embedded again when the run resumed) and which weights those were."""
        self.start_figures = {}
        if not self.main or self.start_weights is None:
            return
        cfg, s = self.config, self.state
        vectors = self.start_embeddings
        if vectors is None and self.prepared.collection.has_labels:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)  # the head the run started with
                start = Encoder(cfg.backbone, cfg.embedding_dim)
            load_initial_weights(start, self.start_weights)
            vectors = embed(self.rt.prepare(start), self.rt, self.reader, s.mean, s.std,
                            len(self.prepared.collection), cfg.embedding_dim)
        self.start_figures = {
            **(pretrained.knn_figures(vectors, self.prepared.collection, cfg.knn_k,
                                      cfg.knn_sigma) if vectors is not None else {}),
            "init_weights": pretrained.describe(self.start_weights,
                                                pretrained.weights_for(cfg.backbone))}

    # --- parts of a step -------------------------------------------------------------------
    def _bounds(self, batch: int) -> tuple[int, int]:
        return self.dist.bounds(batch) if self.dist else (0, batch)

    def _update_bank(self, batch: np.ndarray, index: torch.Tensor, out: StepOut) -> None:
        s = self.state
        if self.dist is None:
            s.bank.update(index, out.features)
            return
        # One bank: every process applies the whole global batch's update.
        features = self.dist.gather_batch(out.features, len(batch))
        s.bank.update(torch.from_numpy(batch).to(self.rt.device, non_blocking=True), features)
        if self.dist.check_replicas:
            self.dist.assert_replicas_equal(
                s.bank.vectors, f"round {s.round} epoch {s.epoch} step {s.step}")
            self.replica_checks += 1

    def _time_step(self, out: StepOut, t_prev: float, batch: int) -> None:
        t1, t2, t3, t4 = out.times
        t5 = time.perf_counter()
        acc = self.state.acc
        acc.data_s += t1 - t_prev  # waiting for the batch, then augmenting it
        acc.backbone_s += (t2 - t1) + (t4 - t3)
        acc.bank_s += (t3 - t2) + (t5 - t4)
        acc.seen += batch

    def _global_sum(self, value: torch.Tensor) -> float:
        if self.dist is not None:
            value = self.dist.sum_(value.detach().clone().reshape(1))
        return float(value.sum())

    def _stop_or_save(self) -> tuple[str | None, bool]:
        """(stop reason, checkpoint now), decided by rank 0 and known to every process."""
        reason = self.should_stop()
        save = bool(reason) or self.checkpoints.due()
        if self.dist is None:
            return reason, save
        return self.dist.stop_decision(reason, save, self.rt.device)

    def _embed_all(self) -> np.ndarray:
        n = len(self.prepared.collection)
        self.on_status("embedding", {"items": n})
        return embed(self.state.model, self.rt, self.reader, self.state.mean, self.state.std,
                     n, self.config.embedding_dim)
