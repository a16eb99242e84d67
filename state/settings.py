"""One settings object, read from the environment, shared by the worker and the API."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer.embedding_map import MAX_POINTS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    broker_url: str | None = Field(
        default=None,
        description="Celery broker, e.g. redis://redis:6379/0. Unset: the embedded default "
        "(a filesystem queue and a SQLite job table under STATE_ROOT; one machine, no server).",
    )
    data_root: Path = Field(default=Path("var/data"),
                            description="Datasets, one folder or archive per name.")
    models_root: Path = Field(default=Path("var/models"),
                              description="Published model bundles and each collection's "
                              "CURRENT pointer.")
    state_root: Path = Field(
        default=Path("var/state"),
        description="Job checkpoints, and in the embedded default the queue and the job table.",
    )
    pretrained_download: bool = Field(
        default=True,
        description="Whether POST /train may download pretrained weights (init_from=imagenet) "
        "that are neither under DATA_ROOT/.pretrained/ nor in the torch hub cache (TORCH_HOME). "
        "false on a machine without internet: such a job is refused at once with the file to "
        "place there.")
    key_prefix: str = Field(default="and:", description="Prefix of every Redis key we write.")
    job_time_limit_s: int = Field(
        default=72 * 3600, ge=1,
        description="Longest a training job may run; it then stops with a checkpoint and "
        "fails. Values of a few seconds are for tests and drills.")
    heartbeat_s: float = Field(default=2.0, gt=0,
                               description="How often a running job renews its lease and "
                               "checks for cancellation.")
    lease_s: float = Field(default=30.0, gt=0,
                           description="A running job whose lease is older than this is lost "
                           "and is resumed from its checkpoint by another worker.")
    sweep_interval_s: float = Field(default=15.0, gt=0,
                                    description="How often workers look for lost jobs.")
    max_attempts: int = Field(default=5, ge=1,
                              description="A job lost this many times is failed, not retried.")
    resend_queued_after_s: float = Field(
        default=600.0, gt=0,
        description="A queued job that no worker has taken this long after its message was "
        "sent is sent again (its message may have been lost); duplicates are harmless.")
    gpu_queue: str = Field(default="gpu", description="Queue of training jobs.")
    map_points: int = Field(
        default=MAX_POINTS, ge=0, le=1_000_000,
        description="Most items a published model's 2-D map shows (a random sample of larger "
        "collections); 0: no map. Its t-SNE is most of a publish: about 4 s for 2,000 points "
        "and 4 minutes for 50,000 on 2 CPU cores.")
    worker_gpus: int | None = Field(
        default=None, ge=1, le=64,
        description="GPUs this worker owns: it takes jobs asking for up to that many (gpus=k "
        "runs k processes) and starts their processes itself. Unset: the number of CUDA "
        "devices, or 1 without CUDA (then gpus=k runs k CPU processes).")
    capacity_ttl_s: float = Field(
        default=60.0, gt=0,
        description="A worker's advertised GPU count expires this long after its last renewal "
        "(every SWEEP_INTERVAL_S); POST /train refuses jobs asking for more GPUs than any "
        "live worker has.")

    @field_validator("broker_url", "worker_gpus", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # An empty variable (BROKER_URL= in an env file) means "not set".
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def redis_url(self) -> str | None:
        """The broker's URL when it is Redis (the job store and the change log live there too)."""
        url = self.broker_url or ""
        return url if url.startswith(("redis://", "rediss://")) else None

    @property
    def uses_redis(self) -> bool:
        return self.redis_url is not None

    @property
    def runs_root(self) -> Path:
        return self.state_root / "runs"

    def ensure_dirs(self) -> None:
        for path in (self.data_root, self.models_root, self.state_root, self.runs_root):
            path.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
