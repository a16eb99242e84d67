"""The API's settings: the worker's (broker, data, models, state) plus keys and limits."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator

from worker.settings import Settings

PLACEHOLDER_KEYS = frozenset({"", "changeme", "change-me", "change_me", "secret", "admin",
                              "password", "test", "example", "replace-me"})
MIN_KEY_LENGTH = 16


class ServiceSettings(Settings):
    environment: str = Field(
        default="development",
        description="development or production. In production the service refuses to start "
        "without real API keys.")
    admin_api_key: SecretStr | None = Field(
        default=None, description="Bearer key for mutating routes (train, cancel, datasets, "
        "promote). Unset in development: those routes are open (a warning is logged).")
    read_api_key: SecretStr | None = Field(
        default=None, description="Bearer key for read routes; unset: read routes are open.")
    max_upload_mb: int = Field(default=2048, ge=1, description="Largest dataset archive.")
    max_extracted_mb: int = Field(default=20480, ge=1,
                                  description="Largest total size an archive may expand to.")
    max_archive_entries: int = Field(default=2_000_000, ge=1)
    max_images_per_request: int = Field(default=64, ge=1)
    max_image_mb: float = Field(default=10.0, gt=0, description="Largest single query image.")
    max_k: int = Field(default=1000, ge=1, description="Largest k for neighbours and search.")
    max_classify_k: int = Field(default=1000, ge=1)
    embed_max_batch: int = Field(default=64, ge=1,
                                 description="Images the embedding batcher runs together.")
    embed_max_wait_ms: float = Field(
        default=10.0, ge=0,
        description="Longest wait to fill a batch; a batch waits only while more requests "
        "are expected (a lone request never waits).")
    embed_workers: int = Field(
        default=0, ge=0, le=64,
        description="Inference threads; 0 = one per CPU core on CPU (each running "
        "single-threaded kernels), one on CUDA.")
    model_poll_s: float = Field(default=1.0, gt=0,
                                description="How often the API looks for a new current model.")
    device: str = Field(default="auto", description="Inference device: auto, cpu or cuda.")

    @field_validator("admin_api_key", "read_api_key", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def production(self) -> bool:
        return self.environment.lower() in ("production", "prod")

    def key_problems(self) -> list[str]:
        """Why these keys are unsafe outside development (empty: they are fine)."""
        problems = []
        for name, key in (("ADMIN_API_KEY", self.admin_api_key),
                          ("READ_API_KEY", self.read_api_key)):
            value = key.get_secret_value() if key else None
            if value is None:
                if name == "ADMIN_API_KEY":
                    problems.append(f"{name} is not set")
            elif value.lower() in PLACEHOLDER_KEYS or len(value) < MIN_KEY_LENGTH:
                problems.append(f"{name} is a placeholder or shorter than {MIN_KEY_LENGTH} "
                                "characters")
        return problems


@lru_cache(maxsize=1)
def get_service_settings() -> ServiceSettings:
    return ServiceSettings()
