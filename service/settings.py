"""The API's settings: the worker's (broker, data, models, state) plus keys and limits."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from state.settings import Settings

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
        default=None, description="Bearer key for read routes (and /metrics and the detail of "
        "/readyz); unset: read routes are open.")
    allow_open_reads: bool = Field(
        default=False, description="In production without READ_API_KEY, serve read routes "
        "(dataset images, thumbnails, item lists, neighbours) to anyone. Off: the service "
        "refuses to start in production without READ_API_KEY.")
    metrics_api_key: SecretStr | None = Field(
        default=None, description="Bearer key for /metrics only (for a Prometheus scraper); "
        "unset: /metrics takes the read key.")
    allowed_hosts: str = Field(
        default="localhost 127.0.0.1 ::1", description="Host names (space-separated) the "
        "service answers to while a route is open without a key in development: a page on "
        "another site that rebinds its name to this machine is refused. Add the names you "
        "reach a keyless development server by; with keys set it is not checked.")
    api_docs: Literal["open", "key", "off"] = Field(
        default="open", description="/docs, /redoc and /openapi.json: open, key (need the read "
        "key when one is set) or off.")
    max_upload_mb: int = Field(default=2048, ge=1, description="Largest dataset archive.")
    max_extracted_mb: int = Field(default=20480, ge=1,
                                  description="Largest total size an archive may expand to.")
    max_archive_entries: int = Field(default=2_000_000, ge=1,
                                     description="Most entries (files, folders) in an archive.")
    min_free_disk_mb: int = Field(
        default=1024, ge=0, description="An upload is refused (507) rather than leave less "
        "free disk than this under DATA_ROOT.")
    max_images_per_request: int = Field(default=64, ge=1, le=4096)
    max_items_per_request: int = Field(
        default=10_000, ge=1, le=1_000_000,
        description="Most images one POST /items archive may add, and most ids one bulk DELETE "
        "/items may name (files and JSON adds take MAX_IMAGES_PER_REQUEST).")
    max_image_mb: float = Field(default=10.0, gt=0, le=1024,
                                description="Largest single query image (bytes).")
    max_items_archive_mb: int = Field(
        default=1024, ge=1, description="Largest total size a POST /items archive may expand "
        "to (every member, image or not); each image in it is also held to MAX_IMAGE_MB.")
    max_concurrent_archive_adds: int = Field(
        default=2, ge=1, le=64, description="POST /items archives handled at once by one API "
        "process; past it 503 with Retry-After.")
    max_query_pixels: int = Field(
        default=25_000_000, ge=1024, description="Most pixels a query image may decode to, "
        "read from its header before anything is decoded: a JPEG decodes at down to 1/8 of its "
        "size (a 50-megapixel photo to 0.8 MP), a PNG, TIFF, WebP or HEIC whole (a phone's "
        "24-megapixel HEIC passes); a decompression bomb does not.")
    decode_concurrency: int = Field(
        default=0, ge=0, le=256, description="Query images decoded at once in one API process "
        "(each may take up to ~8 bytes per pixel, 16 for WebP); 0 = one per CPU core. Small "
        "images decode inline and do not count.")
    max_k: int = Field(default=1000, ge=1, description="Largest k for neighbours and search.")
    max_classify_k: int = Field(default=1000, ge=1)
    embed_max_batch: int = Field(default=64, ge=1,
                                 description="Images the embedding batcher runs together.")
    embed_max_wait_ms: float = Field(
        default=10.0, ge=0,
        description="Longest wait to fill a batch; a batch waits only while more requests "
        "are expected (a lone request never waits).")
    embed_max_queued_images: int = Field(
        default=1024, ge=1, description="Images waiting for or in embedding at once; past it "
        "/embed, /search and /classify by image answer 503 with Retry-After.")
    embed_workers: int = Field(
        default=0, ge=0, le=64,
        description="Inference threads; 0 = one per CPU core on CPU (each running "
        "single-threaded kernels), one on CUDA.")
    default_collection: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="The collection (a dataset's name) that the routes outside "
        "/collections/{name} serve; unset: the only collection, and a 409 when there are "
        "several.")
    model_poll_s: float = Field(default=1.0, gt=0,
                                description="How often the API looks for a new current model.")
    retrain_check_s: float = Field(
        default=30.0, gt=0, description="How often the API checks the current model's dataset "
        "against its retrain policy (PUT /datasets/{name}/retrain).")
    model_cache_size: int = Field(
        default=2, ge=0, le=64, description="Model versions kept loaded besides the current one, "
        "for requests that pin ?model_version= (least recently used dropped first).")
    model_loads_per_min: int = Field(
        default=10, ge=1, description="Loads of pinned (not current) versions per minute, in "
        "bursts of at most 2; past it such requests answer 503 with Retry-After.")
    # Measured by bench/duplicates.py (docs/benchmarks.md, "Near-duplicates"; figures in
    # bench/results/duplicates.json): on CIFAR-10 copies with a briefly trained small_cnn no
    # threshold kept pair precision at 0.95; 0.999 had the best F1 (precision 0.65, recall
    # 0.24: re-encoded copies found, most resized and cropped ones not).
    duplicate_threshold: float = Field(
        default=0.999, ge=0.0, le=1.0, description="Cosine at or above which an image is a "
        "near-duplicate: POST /items lists, for each added image, the existing items at or "
        "above it (and refuses the request with if_duplicate=refuse); the default threshold of "
        "GET /models/{version}/duplicates.")
    # Unlimited by default: a share of the machine's memory would be a guess (the API shares
    # the machine with training workers, and a container's limit is not the machine's), and a
    # budget below what one deployment's collections take would make it reload them forever.
    serve_memory_mb: float = Field(
        default=0, ge=0, description="Memory the loaded models of one API process may take "
        "(vectors, index and encoder of each collection's loaded versions); past it the least "
        "recently used collection with no request in flight is unloaded, and loads again on "
        "its next request; checked before each load and after each request (live adds grow a "
        "collection). Fractions of a MB are taken. At start only the collections that fit are "
        "loaded (the default first). 0 = no budget: every collection is loaded at start.")
    device: str = Field(default="auto", description="Inference device: auto, cpu or cuda.")
    inference_engine: Literal["torch", "onnxruntime"] = Field(
        default="torch", description="What runs the encoder for /embed and the other routes "
        "that embed images: torch (on DEVICE), or onnxruntime (the model's ONNX export, made "
        "beside encoder.pt when a version is first loaded; on the CPU, in fp32, whatever "
        "DEVICE says: faster than torch on CPUs without bf16, slower on CPUs with it; see "
        "docs/benchmarks.md).")

    @field_validator("admin_api_key", "read_api_key", "metrics_api_key", "default_collection",
                     mode="before")
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
                          ("READ_API_KEY", self.read_api_key),
                          ("METRICS_API_KEY", self.metrics_api_key)):
            value = key.get_secret_value() if key else None
            if value is None:
                if name == "ADMIN_API_KEY":
                    problems.append(f"{name} is not set")
                elif name == "READ_API_KEY" and not self.allow_open_reads:
                    problems.append(f"{name} is not set (set it, or ALLOW_OPEN_READS=true to "
                                    "serve every read route, dataset images included, to "
                                    "anyone)")
            elif value.lower() in PLACEHOLDER_KEYS or len(value) < MIN_KEY_LENGTH:
                problems.append(f"{name} is a placeholder or shorter than {MIN_KEY_LENGTH} "
                                "characters")
        return problems


@lru_cache(maxsize=1)
def get_service_settings() -> ServiceSettings:
    return ServiceSettings()
