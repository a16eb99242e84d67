"""Every hyper-parameter of an AND training run, in one typed place.

Defaults are the reference schedule for CIFAR-10 (AND_SPEC.md); each carries a one-line why
and its bounds or choices. `TrainConfig.from_dict` refuses unknown keys and bad values with a
message naming the key, so the CLI, the job queue and the HTTP API all reject the same mistakes
the same way; `TrainConfig.json_schema()` publishes the same definition (types, bounds,
defaults, meanings) for HTTP clients.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from trainer.config_fields import bounded, coerce, json_property, problem, short
from trainer.errors import ConfigError

BACKBONES = ("resnet18_cifar", "small_cnn", "resnet18")
NATIVE_IMAGE_SIZE = {"resnet18_cifar": 32, "small_cnn": 32, "resnet18": 224}
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
DEVICE_PATTERN = r"auto|cpu|cuda(:[0-9]{1,2})?"


@dataclass(frozen=True)
class TrainConfig:
    # --- model ---------------------------------------------------------------------------
    backbone: str = bounded(
        "resnet18_cifar (the paper's net for small images), small_cnn (trains in minutes on a "
        "CPU) or resnet18 (ImageNet-style, for 224x224 inputs).",
        default="resnet18_cifar", choices=BACKBONES,
    )
    image_size: int = bounded(
        "Side of the square model input; 0 = the backbone's native size (32 or 224). Images of "
        "any size are resized (shorter side) and centre-cropped to it.",
        default=0, ge=8, le=1024, zero_allowed=True,
        message="must be 0 (native) or between 8 and 1024",
    )
    embedding_dim: int = bounded(
        "Dimension of the L2-normalised embedding (the paper's 128).", default=128, ge=2,
        le=4096,
    )
    init_from: str = bounded(
        "Start from existing weights instead of random ones: a published model version (the "
        "same backbone and embedding_dim; a grown collection re-trains in a fraction of the "
        "epochs), or a file: an encoder.pt of this project or, for backbone=resnet18, a "
        "torchvision ResNet-18 state dict such as downloaded ImageNet weights (files under the "
        "data root for jobs, any path on the command line). Empty: random initialisation.",
        default="", pattern=r"[^\x00-\x1f\x7f]{0,1024}",
        message="must be a model version or a file path of at most 1024 printable characters",
    )
    # --- curriculum ----------------------------------------------------------------------
    rounds: int = bounded(
        "Rounds including round 0 (instance discrimination); rounds=1 is the Instance "
        "baseline, 5 is the paper's AND.",
        default=5, ge=1, le=100,
    )
    epochs_per_round: int = bounded(
        "Epochs in each round; the learning rate restarts every round.", default=200, ge=1,
        le=10_000,
    )
    anchor_rate: float = bounded(
        "Share of samples added as anchors per round (round r uses min(1, r*rate)); "
        "0 = 1/(rounds-1), the paper's curriculum S = r/R (0.25 for 5 rounds).",
        default=0.0, ge=0, le=1, message="must be in [0, 1] (0 = 1/(rounds-1))",
    )
    neighbours: int = bounded("k of each anchor's neighbourhood (the paper's k=1).", default=1,
                           ge=1, le=1000)
    # --- memory bank and loss ------------------------------------------------------------
    tau: float = bounded("Softmax temperature of the non-parametric classifier.", default=0.1,
                      gt=0, le=10)
    bank_momentum: float = bounded(
        "m in v <- normalize(m*v + (1-m)*f); 0.5 as in the reference.", default=0.5, ge=0, lt=1
    )
    # --- optimisation --------------------------------------------------------------------
    batch_size: int = bounded(
        "Images per step over all processes together (the global batch; the paper's 128). A "
        "run on gpus x nodes processes splits every batch between them, so the same "
        "batch_size trains the same schedule on any number of processes.",
        default=128, ge=2, le=65_536)
    lr: float = bounded(
        "SGD learning rate at the start of every round, for the global batch_size: it stays "
        "as given whatever the number of processes (the gradient is the global batch's mean); "
        "scale it yourself only when you change batch_size.",
        default=0.03, gt=0, le=10)
    lr_milestones: tuple[float, ...] = bounded(
        "Fractions of a round at which the lr is multiplied by lr_decay (80/120/160 of 200).",
        default=(0.4, 0.6, 0.8), gt=0, le=1, max_items=32,
    )
    lr_decay: float = bounded("Multiplier applied at each milestone.", default=0.1, gt=0, le=1)
    momentum: float = bounded("SGD momentum.", default=0.9, ge=0, lt=1)
    nesterov: bool = bounded("Nesterov momentum, as in the reference.", default=True)
    weight_decay: float = bounded("L2 weight decay.", default=5e-4, ge=0, lt=1)
    # --- augmentation (the reference's CIFAR pipeline) -----------------------------------
    crop_scale_min: float = bounded(
        "Lower bound of RandomResizedCrop's area scale (upper is 1).", default=0.2, gt=0, le=1
    )
    color_jitter: float = bounded(
        "Strength of brightness, contrast, saturation and hue jitter.", default=0.4, ge=0, le=0.5
    )
    grayscale_p: float = bounded("Probability of turning a view grey.", default=0.2, ge=0, le=1)
    # --- evaluation ----------------------------------------------------------------------
    knn_k: int = bounded("Neighbours voting in weighted kNN evaluation.", default=200, ge=1,
                      le=100_000)
    knn_sigma: float = bounded("Temperature of the kNN vote weights exp(s/sigma).", default=0.1,
                            gt=0, le=100)
    eval_each_round: bool = bounded(
        "Measure kNN accuracy at the end of every round (labelled data only); it never "
        "selects a model.",
        default=True,
    )
    knn_every_epochs: int = bounded(
        "Also measure kNN accuracy every this many epochs (0 = only at round ends).", default=0,
        ge=0, le=10_000,
    )
    # --- index ---------------------------------------------------------------------------
    index: str = bounded(
        "FAISS index of the published collection: auto (exact up to 200k items, HNSW above), "
        "flat, ivf or hnsw.",
        default="auto", choices=INDEX_TYPES,
    )
    # --- runtime -------------------------------------------------------------------------
    seed: int = bounded("Seed of every random choice; a run is reproducible from it.", default=0,
                     ge=0, le=2**63 - 1, message="must be a non-negative integer below 2**63")
    device: str = bounded("auto (CUDA when present), cpu, cuda or cuda:N.", default="auto",
                       pattern=DEVICE_PATTERN, message="must be auto, cpu, cuda or cuda:N")
    precision: str = bounded(
        "auto (bf16 autocast where the hardware has it: CUDA, or a CPU with AMX/AVX512-BF16), "
        "bf16 or fp32. The memory bank and the loss always run in fp32.",
        default="auto", choices=("auto", "bf16", "fp32"),
    )
    channels_last: bool = bounded("Use the channels_last memory format for conv nets.",
                                  default=True)
    compile: str = bounded(
        "torch.compile the training forward pass: auto (CUDA runs of 2,000+ steps where a C "
        "compiler is present; on CPU it measured within +-8 % of eager), always or never.",
        default="auto", choices=("auto", "always", "never"),
    )
    num_workers: int = bounded(
        "Decoding processes; -1 = one per CPU core (up to 8).", default=-1, ge=-1, le=64
    )
    cache_images: str = bounded(
        "auto (decode every image once into memory when it fits in cache_max_gb), always or "
        "never (decode on the fly in worker processes).",
        default="auto", choices=("auto", "always", "never"),
    )
    cache_max_gb: float = bounded("Memory allowed for the decoded image cache.", default=4.0,
                               gt=0, le=1024)
    on_corrupt: str = bounded(
        "skip (report and leave out unreadable images) or fail (refuse the dataset).",
        default="skip", choices=("skip", "fail"),
    )
    gpus: int = bounded(
        "Training processes per machine: one per GPU on CUDA (DistributedDataParallel over "
        "NCCL), or that many CPU processes over Gloo. 1 = a single process.",
        default=1, ge=1, le=64,
    )
    nodes: int = bounded(
        "Machines taking part in the run (each runs gpus processes, started by torchrun; see "
        "docs/distributed.md). Jobs submitted over HTTP run on one machine.",
        default=1, ge=1, le=1024,
    )
    sync_bn: bool = bounded(
        "Batch-norm statistics over the global batch (synchronised between processes), so that "
        "a run on several processes computes what one process computes with the same "
        "batch_size; false: over each process's share of it (the reference's DataParallel "
        "behaviour: two fewer all-reduces per batch-norm layer and step, but smaller "
        "normalisation batches, which trained worse).",
        default=True,
    )
    checkpoint_interval_s: float = bounded(
        "Also checkpoint mid-epoch at most this often (seconds), so a lost worker loses little.",
        default=300.0, ge=1, le=86_400,
    )

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, *,
                  strict: bool = False) -> TrainConfig:
        """Build a config from overrides; unknown keys and bad values raise ConfigError.

        `strict` takes JSON types only as `json_schema()` states them (true, not "true"; a list
        of milestones, not one number): what an HTTP client sends is then valid exactly when
        the published schema says so.
        """
        values = dict(values or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                unknown[0], f"unknown key; valid keys are: {', '.join(sorted(known))}"
            )
        hints = typing.get_type_hints(cls)
        converted = {key: coerce(key, hints[key], value, strict)
                     for key, value in values.items()}
        config = cls(**converted)
        config.validate()
        return config

    @classmethod
    def from_strings(cls, pairs: Iterable[str],
                     base: Mapping[str, Any] | None = None) -> TrainConfig:
        """Parse CLI `key=value` pairs (values are JSON where they parse as JSON)."""
        values = dict(base or {})
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(pair, "expected key=value")
            try:
                values[key] = json.loads(raw)
            except json.JSONDecodeError:
                values[key] = raw
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["lr_milestones"] = list(self.lr_milestones)
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        merged = self.to_dict() | changes
        return TrainConfig.from_dict(merged)

    # --- derived values -----------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return self.image_size or NATIVE_IMAGE_SIZE[self.backbone]

    @property
    def anchor_step(self) -> float:
        if self.anchor_rate > 0:
            return self.anchor_rate
        return 1.0 / max(1, self.rounds - 1)

    def anchor_count(self, round_index: int, n: int) -> int:
        """floor(N * min(1, rate * r)) anchors in round r; round 0 has none."""
        share = min(1.0, self.anchor_step * round_index)
        return math.floor(n * share + 1e-9)

    def lr_at(self, epoch: int) -> float:
        """Step schedule inside a round: lr * decay^(milestones passed)."""
        # Never before epoch 1: a short round must still start at the full rate.
        passed = sum(epoch >= max(1, round(m * self.epochs_per_round)) for m in self.lr_milestones)
        return self.lr * self.lr_decay**passed

    @property
    def world_size(self) -> int:
        """Training processes over all machines."""
        return self.gpus * self.nodes

    @property
    def total_epochs(self) -> int:
        return self.rounds * self.epochs_per_round

    # Keys that may differ between an interrupted run and its resumption: they change how
    # fast the run goes, never what it computes.
    RUNTIME_KEYS: typing.ClassVar[frozenset[str]] = frozenset(
        {"device", "num_workers", "cache_images", "cache_max_gb", "checkpoint_interval_s",
         "on_corrupt", "eval_each_round", "knn_every_epochs", "index", "compile"}
    )

    def training_identity(self) -> dict[str, Any]:
        identity = {k: v for k, v in self.to_dict().items() if k not in self.RUNTIME_KEYS}
        if self.world_size == 1:
            # One process normalises over the whole batch either way: sync_bn changes nothing
            # (and a run started before its default changed still resumes).
            del identity["sync_bn"]
        return identity

    # --- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        for f in fields(self):
            wrong = problem(f.metadata, getattr(self, f.name))
            if wrong:
                raise ConfigError(f.name, f"{wrong} (got {short(getattr(self, f.name))})")
        # Rules between keys (json_schema() states the same ones).
        if self.nesterov and self.momentum <= 0:
            raise ConfigError("nesterov", f"needs momentum > 0 (got {self.nesterov!r})")
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ConfigError("lr_milestones", "must be increasing fractions in (0, 1] "
                              f"(got {self.lr_milestones!r})")
        if self.batch_size < 2 * self.world_size:
            # Every process needs two images of each batch: batch norm cannot train on one.
            raise ConfigError("batch_size", f"must be at least 2 x gpus x nodes = "
                              f"{2 * self.world_size} (got {self.batch_size})")

    def validate_for_dataset(self, n_train: int) -> None:
        """Checks that need the number of training images."""
        if n_train <= self.neighbours:
            raise ConfigError(
                "neighbours", f"must be smaller than the number of training images ({n_train})"
            )

    @classmethod
    def documentation(cls) -> dict[str, dict[str, Any]]:
        """Key -> {default, doc}: used by the CLI help and the API schema."""
        out = {}
        for f in fields(cls):
            default = f.default
            if isinstance(default, tuple):
                default = list(default)
            out[f.name] = {"default": default, "doc": f.metadata.get("doc", "")}
        return out

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The config as a JSON Schema object: every key with its type, default, meaning and
        bounds, and the rule between keys. An object is valid exactly when
        `from_dict(obj, strict=True)` accepts it, except that milestones must also come in
        increasing order there and batch_size be at least 2 x gpus x nodes."""
        hints = typing.get_type_hints(cls)
        properties = {}
        for f in fields(cls):
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            prop = {**json_property(hints[f.name], f.metadata), "default": default,
                    "description": f.metadata.get("doc", "")}
            properties[f.name] = prop
        return {
            "title": "TrainConfig", "type": "object", "additionalProperties": False,
            "description": "Training config overrides; every key is optional.",
            "properties": properties,
            # nesterov (default true) needs momentum > 0 (momentum's default is 0.9).
            "anyOf": [{"properties": {"momentum": {"exclusiveMinimum": 0}}},
                      {"required": ["nesterov"], "properties": {"nesterov": {"const": False}}}],
            # batch_size >= 2 x gpus x nodes is checked on submission (JSON Schema cannot
            # compare two keys).
        }

