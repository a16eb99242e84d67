"""Every hyper-parameter of an AND training run, in one typed place.

Defaults are the reference schedule for CIFAR-10 (AND_SPEC.md); each carries a one-line why
and its bounds or choices, which pydantic checks. `TrainConfig.from_dict` refuses unknown keys
and bad values with a message naming the key, so the CLI, the job queue and the HTTP API all
reject the same mistakes the same way; `TrainConfig.json_schema()` publishes the same
definition (types, bounds, defaults, meanings) for HTTP clients.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError, WithJsonSchema

from trainer.config_fields import (
    LISTED,
    WHOLE,
    Bool,
    Float,
    Int,
    Printable,
    Says,
    Str,
    refusal,
)
from trainer.errors import ConfigError

Backbone = Literal["resnet18_cifar", "small_cnn", "resnet18"]
IndexType = Literal["auto", "flat", "ivf", "hnsw"]
Switch = Literal["auto", "always", "never"]
BACKBONES: tuple[str, ...] = typing.get_args(Backbone)
NATIVE_IMAGE_SIZE = {"resnet18_cifar": 32, "small_cnn": 32, "resnet18": 224}
INDEX_TYPES: tuple[str, ...] = typing.get_args(IndexType)
DEVICE_PATTERN = r"auto|cpu|cuda(:[0-9]{1,2})?"


@dataclass(frozen=True)
class TrainConfig:
    __pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={
        "description": "Training config overrides; every key is optional.",
        # nesterov (default true) needs momentum > 0 (momentum's default is 0.9).
        "anyOf": [{"properties": {"momentum": {"exclusiveMinimum": 0}}},
                  {"required": ["nesterov"], "properties": {"nesterov": {"const": False}}}],
        # batch_size >= 2 x gpus x nodes is checked on submission (JSON Schema cannot compare
        # two keys).
    })

    # --- model ---------------------------------------------------------------------------
    backbone: Annotated[Backbone, Field(description=
        "resnet18_cifar (the paper's net for small images), small_cnn (trains in minutes on a "
        "CPU) or resnet18 (ImageNet-style, for 224x224 inputs).")] = "resnet18_cifar"
    image_size: Annotated[
        Annotated[Int, Field(ge=0, le=0)] | Annotated[Int, Field(ge=8, le=1024)],
        Field(description=
              "Side of the square model input; 0 = the backbone's native size (32 or 224). "
              "Images of any size are resized (shorter side) and centre-cropped to it."),
        WHOLE, Says("0 (native) or between 8 and 1024"),
        WithJsonSchema({"type": "integer", "anyOf": [{"const": 0},
                                                     {"minimum": 8, "maximum": 1024}]}),
    ] = 0
    embedding_dim: Annotated[Int, Field(ge=2, le=4096, description=
        "Dimension of the L2-normalised embedding (the paper's 128)."), WHOLE] = 128
    init_from: Annotated[Printable, Field(description=
        "Start from existing weights instead of random ones: a published model version (the "
        "same backbone and embedding_dim; a grown collection re-trains in a fraction of the "
        "epochs), or a file: an encoder.pt of this project or, for backbone=resnet18, a "
        "torchvision ResNet-18 state dict (files under the data root for jobs, any path on the "
        "command line); or `imagenet`, for backbone=resnet18: torchvision's "
        "ResNet18_Weights.IMAGENET1K_V1, normalised as ImageNet (the file resnet18-f37072fd.pth "
        "under DATA_ROOT/.pretrained/ or in the torch hub cache, else downloaded). Empty: "
        "random initialisation."),
        Says("a model version or a file path of at most 1024 printable characters")] = ""
    # --- curriculum ----------------------------------------------------------------------
    rounds: Annotated[Int, Field(ge=1, le=100, description=
        "Rounds including round 0 (instance discrimination); rounds=1 is the Instance "
        "baseline, 5 is the paper's AND."), WHOLE] = 5
    epochs_per_round: Annotated[Int, Field(ge=1, le=10_000, description=
        "Epochs in each round; the learning rate restarts every round."), WHOLE] = 200
    anchor_rate: Annotated[Float, Field(ge=0, le=1, description=
        "Share of samples added as anchors per round (round r uses min(1, r*rate)); "
        "0 = 1/(rounds-1), the paper's curriculum S = r/R (0.25 for 5 rounds)."),
        Says("a number in [0, 1] (0 = 1/(rounds-1))")] = 0.0
    neighbours: Annotated[Int, Field(ge=1, le=1000, description=
        "k of each anchor's neighbourhood (the paper's k=1)."), WHOLE] = 1
    # --- memory bank and loss ------------------------------------------------------------
    tau: Annotated[Float, Field(gt=0, le=10, description=
        "Softmax temperature of the non-parametric classifier.")] = 0.1
    bank_momentum: Annotated[Float, Field(ge=0, lt=1, description=
        "m in v <- normalize(m*v + (1-m)*f); 0.5 as in the reference.")] = 0.5
    bank_init: Annotated[Literal["random", "embeddings"], Field(description=
        "How a run from scratch fills its memory bank: `random` unit vectors, as the "
        "reference does (AND_SPEC §2), or `embeddings`, the starting network's embeddings of "
        "the training images (one pass). A random bank pulls every feature towards noise for "
        "the first epochs, which costs short runs much of what the network started with "
        "(docs/benchmarks.md, \"The memory bank's start\"). A warm start always starts "
        "from its embeddings.")] = "random"
    # --- optimisation --------------------------------------------------------------------
    batch_size: Annotated[Int, Field(ge=2, le=65_536, description=
        "Images per step over all processes together (the global batch; the paper's 128). A "
        "run on gpus x nodes processes splits every batch between them, so the same "
        "batch_size trains the same schedule on any number of processes."), WHOLE] = 128
    lr: Annotated[Float, Field(gt=0, le=10, description=
        "SGD learning rate at the start of every round, for the global batch_size: it stays "
        "as given whatever the number of processes (the gradient is the global batch's mean); "
        "scale it yourself only when you change batch_size.")] = 0.03
    lr_milestones: Annotated[tuple[Annotated[Float, Field(gt=0, le=1)], ...], Strict(),
                             Field(max_length=32, description=
        "Fractions of a round at which the lr is multiplied by lr_decay (80/120/160 of 200)."),
        LISTED] = (0.4, 0.6, 0.8)
    lr_decay: Annotated[Float, Field(gt=0, le=1, description=
        "Multiplier applied at each milestone.")] = 0.1
    momentum: Annotated[Float, Field(ge=0, lt=1, description="SGD momentum.")] = 0.9
    nesterov: Annotated[Bool, Field(description="Nesterov momentum, as in the reference.")] = True
    weight_decay: Annotated[Float, Field(ge=0, lt=1, description="L2 weight decay.")] = 5e-4
    # --- augmentation (the reference's CIFAR pipeline) -----------------------------------
    crop_scale_min: Annotated[Float, Field(gt=0, le=1, description=
        "Lower bound of RandomResizedCrop's area scale (upper is 1).")] = 0.2
    color_jitter: Annotated[Float, Field(ge=0, le=0.5, description=
        "Strength of brightness, contrast, saturation and hue jitter.")] = 0.4
    grayscale_p: Annotated[Float, Field(ge=0, le=1, description=
        "Probability of turning a view grey.")] = 0.2
    # --- evaluation ----------------------------------------------------------------------
    knn_k: Annotated[Int, Field(ge=1, le=100_000, description=
        "Neighbours voting in weighted kNN evaluation."), WHOLE] = 200
    knn_sigma: Annotated[Float, Field(gt=0, le=100, description=
        "Temperature of the kNN vote weights exp(s/sigma).")] = 0.1
    eval_each_round: Annotated[Bool, Field(description=
        "Measure kNN accuracy (labelled data) and the label-free score at the end of every "
        "round; neither selects a model.")] = True
    knn_every_epochs: Annotated[Int, Field(ge=0, le=10_000, description=
        "Also measure kNN accuracy and the label-free score every this many epochs (0 = only "
        "at round ends)."),
        WHOLE] = 0
    # --- index ---------------------------------------------------------------------------
    index: Annotated[IndexType, Field(description=
        "FAISS index of the published collection: auto (exact up to 200k items, HNSW above), "
        "flat, ivf or hnsw.")] = "auto"
    # --- runtime -------------------------------------------------------------------------
    seed: Annotated[Int, Field(ge=0, le=2**63 - 1, description=
        "Seed of every random choice; a run is reproducible from it."), WHOLE,
        Says("a non-negative integer below 2**63")] = 0
    device: Annotated[Str, Field(pattern=f"^({DEVICE_PATTERN})$", description=
        "auto (CUDA when present), cpu, cuda or cuda:N."),
        Says("auto, cpu, cuda or cuda:N")] = "auto"
    precision: Annotated[Literal["auto", "bf16", "fp32"], Field(description=
        "auto (bf16 autocast where it is faster: CUDA with bf16, a CPU with AMX, or an AMD "
        "CPU with AVX512-BF16), bf16 or fp32. The memory bank and the loss always run in "
        "fp32.")] = "auto"
    channels_last: Annotated[Bool, Field(description=
        "Use the channels_last memory format for conv nets.")] = True
    compile: Annotated[Switch, Field(description=
        "torch.compile the training forward pass: auto (CUDA runs of 2,000+ steps where a C "
        "compiler is present; on CPU it measured within +-8 % of eager), always or never.")
    ] = "auto"
    num_workers: Annotated[Int, Field(ge=-1, le=64, description=
        "Decoding processes; -1 = one per CPU core (up to 8)."), WHOLE] = -1
    cache_images: Annotated[Switch, Field(description=
        "auto (decode every image once into memory when it fits in cache_max_gb), always or "
        "never (decode on the fly in worker processes).")] = "auto"
    cache_max_gb: Annotated[Float, Field(gt=0, le=1024, description=
        "Memory allowed for the decoded image cache.")] = 4.0
    on_corrupt: Annotated[Literal["skip", "fail"], Field(description=
        "skip (report and leave out unreadable images) or fail (refuse the dataset).")
    ] = "skip"
    gpus: Annotated[Int, Field(ge=1, le=64, description=
        "Training processes per machine: one per GPU on CUDA (DistributedDataParallel over "
        "NCCL), or that many CPU processes over Gloo. 1 = a single process."), WHOLE] = 1
    nodes: Annotated[Int, Field(ge=1, le=1024, description=
        "Machines taking part in the run (each runs gpus processes, started by torchrun; see "
        "docs/distributed.md). Jobs submitted over HTTP run on one machine."), WHOLE] = 1
    sync_bn: Annotated[Bool, Field(description=
        "Batch-norm statistics over the global batch (synchronised between processes), so that "
        "a run on several processes computes what one process computes with the same "
        "batch_size; false: over each process's share of it (the reference's DataParallel "
        "behaviour: two fewer all-reduces per batch-norm layer and step, but smaller "
        "normalisation batches: a different computation, though measured within the seed "
        "spread of it on small collections; docs/benchmarks.md).")] = True
    checkpoint_interval_s: Annotated[Float, Field(ge=1, le=86_400, description=
        "Also checkpoint mid-epoch at most this often (seconds), so a lost worker loses "
        "little.")] = 300.0
    cpu_threads: Annotated[Int, Field(ge=0, le=1024, description=
        "CPU threads of each training process's torch operations, at most one per core; 0: one "
        "per core (shared out between the processes of a run). On a machine busy with other "
        "work, fewer train faster (two threads on two busy cores wait on each other; "
        "docs/benchmarks.md)."),
        WHOLE] = 0

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
        try:
            config = _ADAPTER.validate_python(values, context={"loose": not strict})
        except ValidationError as exc:
            raise refusal(exc, values, cls.json_schema(),
                          typing.get_type_hints(cls, include_extras=True)) from None
        config.check_between_keys()
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
         "on_corrupt", "eval_each_round", "knn_every_epochs", "index", "compile",
         "cpu_threads"}
    )

    def training_identity(self) -> dict[str, Any]:
        identity = {k: v for k, v in self.to_dict().items() if k not in self.RUNTIME_KEYS}
        if self.world_size == 1:
            # One process normalises over the whole batch either way: sync_bn changes nothing
            # (and a run started before its default changed still resumes).
            del identity["sync_bn"]
        return identity

    # --- validation ---------------------------------------------------------------------
    def check_between_keys(self) -> None:
        """The rules between keys (json_schema() states the first one)."""
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
        return {key: {"default": prop["default"], "doc": prop["description"]}
                for key, prop in cls.json_schema()["properties"].items()}

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The config as a JSON Schema object: every key with its type, default, meaning and
        bounds, and the rule between keys. An object is valid exactly when
        `from_dict(obj, strict=True)` accepts it, except that milestones must also come in
        increasing order there and batch_size be at least 2 x gpus x nodes."""
        schema = _ADAPTER.json_schema()
        for prop in schema["properties"].values():
            del prop["title"]  # the key itself
        return schema


_ADAPTER = TypeAdapter(TrainConfig)
