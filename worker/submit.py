"""Submitting a job: everything that can be checked before queueing is checked here, so an
invalid config or dataset is refused with a message instead of failing later on a worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from state.datasets import dataset_path
from state.jobs import PROMOTE_GATE, Job, JobStore
from state.settings import Settings
from worker.capacity import capacity_problem


def check_job(settings: Settings, dataset: str, config: dict[str, Any]) -> None:
    """Raise ConfigError or DatasetError for a job that cannot run."""
    from trainer import warm_start
    from trainer.config import TrainConfig
    from trainer.data import open_collection

    cfg = TrainConfig.from_dict(config)
    if cfg.init_from:  # a published version, or a weights file under the data root
        warm_start.check(cfg.init_from, cfg.backbone, cfg.embedding_dim, settings.models_root,
                         settings.data_root)
    collection = open_collection(dataset_path(settings, dataset), name=dataset)
    collection.check_trainable()
    cfg.validate_for_dataset(len(collection.train_indices))


def submit(store: JobStore, settings: Settings, enqueue: Callable[[str], None], dataset: str,
           config: dict[str, Any], promote: str = PROMOTE_GATE) -> Job:
    from trainer.config import TrainConfig
    from trainer.errors import ConfigError

    cfg = TrainConfig.from_dict(config)
    problem = capacity_problem(store, cfg.gpus, cfg.nodes)
    if problem:
        raise ConfigError("nodes" if cfg.nodes > 1 else "gpus", problem)
    check_job(settings, dataset, config)
    job = store.create(Job.new(dataset, config, promote))
    enqueue(job.id)
    return job
