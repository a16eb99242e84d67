"""The submission gate: a job is checked once, here, before it is queued, so that an invalid
config, a missing or unusable dataset, unusable initial weights or a job no worker can run is
refused with a message instead of failing later on a worker.

Each refusal is a typed error (a ConfigError or DatasetError, as the trainer raises them, of a
kind that says which check refused it); the API maps the kinds to its answers. A job that
passes is recorded and queued once; the runner then trusts what was proved here and only
opens what it needs to train.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from state.datasets import dataset_path
from state.jobs import FAILED, PROMOTE_GATE, QUEUED, Job, JobStore
from state.settings import Settings
from trainer.errors import ConfigError, DatasetError
from worker.capacity import capacity_problem

if TYPE_CHECKING:
    from trainer.config import TrainConfig


class NoSuchDataset(DatasetError):
    """The named dataset does not exist (or its name points outside the data root)."""


class NoWorkerCanRun(ConfigError):
    """The config is valid, but no live worker can run it (too many GPUs, several nodes)."""


class UnfitConfig(ConfigError):
    """The config is valid on its own, but not for this dataset or these initial weights."""


class WeightsNotInPlace(UnfitConfig):
    """init_from=imagenet, but its file is not under the data root (nor in the torch hub
    cache) and could not be downloaded, or downloads are off (PRETRAINED_DOWNLOAD)."""


class UnusableDataset(DatasetError):
    """The dataset exists but cannot be trained as it is (no images, corrupt, bad layout)."""


class NotQueued(RuntimeError):
    """The job was recorded but the queue did not take it; it is recorded as failed."""


@dataclass(frozen=True)
class Submission:
    """A job that passed every check: what its record keeps, and what was proved."""

    dataset: str
    config: dict[str, Any]  # as the job record keeps it
    train_config: TrainConfig
    path: Path  # where the dataset lives, inside the data root


def check_job(store: JobStore, settings: Settings, dataset: str, config: dict[str, Any], *,
              strict: bool = False) -> Submission:
    """Check a job in the order a user fixes it: the config on its own (ConfigError), the
    dataset's existence (NoSuchDataset), a worker to run it (NoWorkerCanRun), then the initial
    weights and the dataset against the config (UnfitConfig, UnusableDataset). `strict` takes
    JSON types only, as the published config schema states them (what an HTTP client sends)."""
    from trainer import warm_start
    from trainer.config import TrainConfig
    from trainer.data import open_collection
    from trainer.pretrained import WeightsUnavailable

    cfg = TrainConfig.from_dict(config, strict=strict)
    try:
        path = dataset_path(settings, dataset)
    except DatasetError as exc:
        raise NoSuchDataset(str(exc)) from None
    problem = capacity_problem(store, cfg.gpus, cfg.nodes)
    if problem:
        raise NoWorkerCanRun("nodes" if cfg.nodes > 1 else "gpus", problem)
    try:
        # A published version, a weights file under the data root, or imagenet: its file is
        # put under the data root here (found in the hub cache or downloaded), once, so a
        # job is never queued to fail on a worker for want of it.
        if cfg.init_from:
            warm_start.check(cfg.init_from, cfg.backbone, cfg.embedding_dim,
                             settings.models_root, settings.data_root,
                             download=settings.pretrained_download)
        collection = open_collection(path, name=dataset)
        collection.check_trainable()
        cfg.validate_for_dataset(len(collection.train_indices))
    except WeightsUnavailable as exc:
        raise WeightsNotInPlace(exc.key, exc.message) from exc
    except ConfigError as exc:
        raise UnfitConfig(exc.key, exc.message) from exc
    except DatasetError as exc:
        raise UnusableDataset(str(exc)) from exc
    return Submission(dataset, dict(config), cfg, path)


def submit(store: JobStore, settings: Settings, enqueue: Callable[[str], None], dataset: str,
           config: dict[str, Any], promote: str = PROMOTE_GATE, *, strict: bool = False) -> Job:
    """Check the job (the errors of check_job), record it and queue it. A queue that does not
    take it raises NotQueued, the job then recorded as failed (never left waiting for a
    message that was not sent)."""
    submission = check_job(store, settings, dataset, config, strict=strict)
    job = store.create(Job.new(submission.dataset, submission.config, promote))
    try:
        enqueue(job.id)
    except Exception as exc:
        store.transition(job.id, {QUEUED}, FAILED, error=f"could not be queued: {exc}")
        raise NotQueued(f"job {job.id} could not be queued: {exc}") from exc
    return job
