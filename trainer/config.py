"""Every hyper-parameter of an AND training run, in one typed place.

Defaults are the reference schedule for CIFAR-10 (AND_SPEC.md); each carries a one-line why.
`TrainConfig.from_dict` refuses unknown keys and bad values with a message naming the key, so
the CLI, the job queue and the HTTP API all reject the same mistakes the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from trainer.errors import ConfigError

BACKBONES = ("resnet18_cifar", "small_cnn", "resnet18")
NATIVE_IMAGE_SIZE = {"resnet18_cifar": 32, "small_cnn": 32, "resnet18": 224}
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")


def _doc(text: str, **kw: Any) -> Any:
    return field(metadata={"doc": text}, **kw)


@dataclass(frozen=True)
class TrainConfig:
    # --- model ---------------------------------------------------------------------------
    backbone: str = _doc(
        "resnet18_cifar (the paper's net for small images), small_cnn (trains in minutes on a "
        "CPU) or resnet18 (ImageNet-style, for 224x224 inputs).",
        default="resnet18_cifar",
    )
    image_size: int = _doc(
        "Side of the square model input; 0 = the backbone's native size (32 or 224). Images of "
        "any size are resized (shorter side) and centre-cropped to it.",
        default=0,
    )
    embedding_dim: int = _doc(
        "Dimension of the L2-normalised embedding (the paper's 128).", default=128
    )
    init_from: str = _doc(
        "Start from existing weights instead of random ones: a published model version (the "
        "same backbone and embedding_dim; a grown collection re-trains in a fraction of the "
        "epochs), or a file: an encoder.pt of this project or, for backbone=resnet18, a "
        "torchvision ResNet-18 state dict such as downloaded ImageNet weights (files under the "
        "data root for jobs, any path on the command line). Empty: random initialisation.",
        default="",
    )
    # --- curriculum ----------------------------------------------------------------------
    rounds: int = _doc(
        "Rounds including round 0 (instance discrimination); rounds=1 is the Instance "
        "baseline, 5 is the paper's AND.",
        default=5,
    )
    epochs_per_round: int = _doc(
        "Epochs in each round; the learning rate restarts every round.", default=200
    )
    anchor_rate: float = _doc(
        "Share of samples added as anchors per round (round r uses min(1, r*rate)); "
        "0 = 1/(rounds-1), the paper's curriculum S = r/R (0.25 for 5 rounds).",
        default=0.0,
    )
    neighbours: int = _doc("k of each anchor's neighbourhood (the paper's k=1).", default=1)
    # --- memory bank and loss ------------------------------------------------------------
    tau: float = _doc("Softmax temperature of the non-parametric classifier.", default=0.1)
    bank_momentum: float = _doc(
        "m in v <- normalize(m*v + (1-m)*f); 0.5 as in the reference.", default=0.5
    )
    # --- optimisation --------------------------------------------------------------------
    batch_size: int = _doc("Images per step.", default=128)
    lr: float = _doc("SGD learning rate at the start of every round.", default=0.03)
    lr_milestones: tuple[float, ...] = _doc(
        "Fractions of a round at which the lr is multiplied by lr_decay (80/120/160 of 200).",
        default=(0.4, 0.6, 0.8),
    )
    lr_decay: float = _doc("Multiplier applied at each milestone.", default=0.1)
    momentum: float = _doc("SGD momentum.", default=0.9)
    nesterov: bool = _doc("Nesterov momentum, as in the reference.", default=True)
    weight_decay: float = _doc("L2 weight decay.", default=5e-4)
    # --- augmentation (the reference's CIFAR pipeline) -----------------------------------
    crop_scale_min: float = _doc(
        "Lower bound of RandomResizedCrop's area scale (upper is 1).", default=0.2
    )
    color_jitter: float = _doc(
        "Strength of brightness, contrast, saturation and hue jitter.", default=0.4
    )
    grayscale_p: float = _doc("Probability of turning a view grey.", default=0.2)
    # --- evaluation ----------------------------------------------------------------------
    knn_k: int = _doc("Neighbours voting in weighted kNN evaluation.", default=200)
    knn_sigma: float = _doc("Temperature of the kNN vote weights exp(s/sigma).", default=0.1)
    eval_each_round: bool = _doc(
        "Measure kNN accuracy at the end of every round (labelled data only); it never "
        "selects a model.",
        default=True,
    )
    knn_every_epochs: int = _doc(
        "Also measure kNN accuracy every this many epochs (0 = only at round ends).", default=0
    )
    # --- index ---------------------------------------------------------------------------
    index: str = _doc(
        "FAISS index of the published collection: auto (exact up to 200k items, HNSW above), "
        "flat, ivf or hnsw.",
        default="auto",
    )
    # --- runtime -------------------------------------------------------------------------
    seed: int = _doc("Seed of every random choice; a run is reproducible from it.", default=0)
    device: str = _doc("auto (CUDA when present), cpu, cuda or cuda:N.", default="auto")
    precision: str = _doc(
        "auto (bf16 autocast where the hardware has it: CUDA, or a CPU with AMX/AVX512-BF16), "
        "bf16 or fp32. The memory bank and the loss always run in fp32.",
        default="auto",
    )
    channels_last: bool = _doc("Use the channels_last memory format for conv nets.", default=True)
    compile: str = _doc(
        "torch.compile the training forward pass: auto (CUDA runs of 2,000+ steps where a C "
        "compiler is present; on CPU it measured within +-8 % of eager), always or never.",
        default="auto",
    )
    num_workers: int = _doc(
        "Decoding processes; -1 = one per CPU core (up to 8).", default=-1
    )
    cache_images: str = _doc(
        "auto (decode every image once into memory when it fits in cache_max_gb), always or "
        "never (decode on the fly in worker processes).",
        default="auto",
    )
    cache_max_gb: float = _doc("Memory allowed for the decoded image cache.", default=4.0)
    on_corrupt: str = _doc(
        "skip (report and leave out unreadable images) or fail (refuse the dataset).",
        default="skip",
    )
    checkpoint_interval_s: float = _doc(
        "Also checkpoint mid-epoch at most this often (seconds), so a lost worker loses little.",
        default=300.0,
    )

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None) -> TrainConfig:
        """Build a config from overrides; unknown keys and bad values raise ConfigError."""
        values = dict(values or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                unknown[0], f"unknown key; valid keys are: {', '.join(sorted(known))}"
            )
        hints = typing.get_type_hints(cls)
        converted = {key: _coerce(key, hints[key], value) for key, value in values.items()}
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
    def total_epochs(self) -> int:
        return self.rounds * self.epochs_per_round

    # Keys that may differ between an interrupted run and its resumption: they change how
    # fast the run goes, never what it computes.
    RUNTIME_KEYS: typing.ClassVar[frozenset[str]] = frozenset(
        {"device", "num_workers", "cache_images", "cache_max_gb", "checkpoint_interval_s",
         "on_corrupt", "eval_each_round", "knn_every_epochs", "index", "compile"}
    )

    def training_identity(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in self.RUNTIME_KEYS}

    # --- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        def need(ok: bool, key: str, message: str) -> None:
            if not ok:
                raise ConfigError(key, f"{message} (got {getattr(self, key)!r})")

        need(self.backbone in BACKBONES, "backbone", f"must be one of {', '.join(BACKBONES)}")
        need(self.image_size == 0 or 8 <= self.image_size <= 1024, "image_size",
             "must be 0 (native) or between 8 and 1024")
        need(2 <= self.embedding_dim <= 4096, "embedding_dim", "must be between 2 and 4096")
        need(1 <= self.rounds <= 100, "rounds", "must be between 1 and 100")
        need(1 <= self.epochs_per_round <= 10_000, "epochs_per_round",
             "must be between 1 and 10000")
        need(0 <= self.anchor_rate <= 1, "anchor_rate", "must be in [0, 1] (0 = 1/(rounds-1))")
        need(1 <= self.neighbours <= 1000, "neighbours", "must be between 1 and 1000")
        need(0 < self.tau <= 10, "tau", "must be in (0, 10]")
        need(0 <= self.bank_momentum < 1, "bank_momentum", "must be in [0, 1)")
        need(2 <= self.batch_size <= 65_536, "batch_size", "must be between 2 and 65536")
        need(0 < self.lr <= 10, "lr", "must be in (0, 10]")
        need(all(0 < m <= 1 for m in self.lr_milestones)
             and list(self.lr_milestones) == sorted(self.lr_milestones),
             "lr_milestones", "must be increasing fractions in (0, 1]")
        need(0 < self.lr_decay <= 1, "lr_decay", "must be in (0, 1]")
        need(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        need(not self.nesterov or self.momentum > 0, "nesterov", "needs momentum > 0")
        need(0 <= self.weight_decay < 1, "weight_decay", "must be in [0, 1)")
        need(0 < self.crop_scale_min <= 1, "crop_scale_min", "must be in (0, 1]")
        need(0 <= self.color_jitter <= 0.5, "color_jitter", "must be in [0, 0.5]")
        need(0 <= self.grayscale_p <= 1, "grayscale_p", "must be in [0, 1]")
        need(1 <= self.knn_k <= 100_000, "knn_k", "must be between 1 and 100000")
        need(0 < self.knn_sigma <= 100, "knn_sigma", "must be in (0, 100]")
        need(0 <= self.knn_every_epochs <= 10_000, "knn_every_epochs",
             "must be between 0 and 10000")
        need(self.index in INDEX_TYPES, "index", f"must be one of {', '.join(INDEX_TYPES)}")
        need(0 <= self.seed < 2**63, "seed", "must be a non-negative integer")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
             "device", "must be auto, cpu, cuda or cuda:N")
        need(self.precision in ("auto", "bf16", "fp32"), "precision",
             "must be auto, bf16 or fp32")
        need(self.compile in ("auto", "always", "never"), "compile",
             "must be auto, always or never")
        need(-1 <= self.num_workers <= 64, "num_workers", "must be between -1 and 64")
        need(len(self.init_from) <= 1024 and self.init_from.isprintable(), "init_from",
             "must be a model version or a file path of at most 1024 printable characters")
        need(self.cache_images in ("auto", "always", "never"), "cache_images",
             "must be auto, always or never")
        need(0 < self.cache_max_gb <= 1024, "cache_max_gb", "must be in (0, 1024]")
        need(self.on_corrupt in ("skip", "fail"), "on_corrupt", "must be skip or fail")
        need(1 <= self.checkpoint_interval_s <= 86_400, "checkpoint_interval_s",
             "must be between 1 and 86400 seconds")

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


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Check `value` against the field's type; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(key, f"must be true or false (got {value!r})")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(key, f"must be an integer (got {value!r})")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(key, f"must be a finite number (got {value!r})")
            return float(value)
        raise ConfigError(key, f"must be a number (got {value!r})")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"must be a string (got {value!r})")
    if origin is tuple:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"must be a list of numbers (got {value!r})")
        (item_hint, _) = typing.get_args(hint)
        return tuple(_coerce(key, item_hint, v) for v in value)
    raise ConfigError(key, f"unsupported type {hint!r}")  # pragma: no cover
