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
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from trainer.errors import ConfigError

BACKBONES = ("resnet18_cifar", "small_cnn", "resnet18")
NATIVE_IMAGE_SIZE = {"resnet18_cifar": 32, "small_cnn": 32, "resnet18": 224}
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
DEVICE_PATTERN = r"auto|cpu|cuda(:[0-9]{1,2})?"
BOUND_KEYS = ("ge", "gt", "le", "lt", "choices", "pattern", "zero_allowed", "max_items",
              "message")


def _doc(text: str, **kw: Any) -> Any:
    """A field with its meaning and its limits: ge/gt/le/lt (numbers, or each item of a list),
    choices, pattern (strings, whole match), zero_allowed (0 also valid, outside the bounds),
    max_items (lists), message (instead of the one made from the bounds)."""
    bounds = {k: kw.pop(k) for k in BOUND_KEYS if k in kw}
    return field(metadata={"doc": text, **bounds}, **kw)


@dataclass(frozen=True)
class TrainConfig:
    # --- model ---------------------------------------------------------------------------
    backbone: str = _doc(
        "resnet18_cifar (the paper's net for small images), small_cnn (trains in minutes on a "
        "CPU) or resnet18 (ImageNet-style, for 224x224 inputs).",
        default="resnet18_cifar", choices=BACKBONES,
    )
    image_size: int = _doc(
        "Side of the square model input; 0 = the backbone's native size (32 or 224). Images of "
        "any size are resized (shorter side) and centre-cropped to it.",
        default=0, ge=8, le=1024, zero_allowed=True,
        message="must be 0 (native) or between 8 and 1024",
    )
    embedding_dim: int = _doc(
        "Dimension of the L2-normalised embedding (the paper's 128).", default=128, ge=2,
        le=4096,
    )
    init_from: str = _doc(
        "Start from existing weights instead of random ones: a published model version (the "
        "same backbone and embedding_dim; a grown collection re-trains in a fraction of the "
        "epochs), or a file: an encoder.pt of this project or, for backbone=resnet18, a "
        "torchvision ResNet-18 state dict such as downloaded ImageNet weights (files under the "
        "data root for jobs, any path on the command line). Empty: random initialisation.",
        default="", pattern=r"[^\x00-\x1f\x7f]{0,1024}",
        message="must be a model version or a file path of at most 1024 printable characters",
    )
    # --- curriculum ----------------------------------------------------------------------
    rounds: int = _doc(
        "Rounds including round 0 (instance discrimination); rounds=1 is the Instance "
        "baseline, 5 is the paper's AND.",
        default=5, ge=1, le=100,
    )
    epochs_per_round: int = _doc(
        "Epochs in each round; the learning rate restarts every round.", default=200, ge=1,
        le=10_000,
    )
    anchor_rate: float = _doc(
        "Share of samples added as anchors per round (round r uses min(1, r*rate)); "
        "0 = 1/(rounds-1), the paper's curriculum S = r/R (0.25 for 5 rounds).",
        default=0.0, ge=0, le=1, message="must be in [0, 1] (0 = 1/(rounds-1))",
    )
    neighbours: int = _doc("k of each anchor's neighbourhood (the paper's k=1).", default=1,
                           ge=1, le=1000)
    # --- memory bank and loss ------------------------------------------------------------
    tau: float = _doc("Softmax temperature of the non-parametric classifier.", default=0.1,
                      gt=0, le=10)
    bank_momentum: float = _doc(
        "m in v <- normalize(m*v + (1-m)*f); 0.5 as in the reference.", default=0.5, ge=0, lt=1
    )
    # --- optimisation --------------------------------------------------------------------
    batch_size: int = _doc(
        "Images per step over all processes together (the global batch; the paper's 128). A "
        "run on gpus x nodes processes splits every batch between them, so the same "
        "batch_size trains the same schedule on any number of processes.",
        default=128, ge=2, le=65_536)
    lr: float = _doc(
        "SGD learning rate at the start of every round, for the global batch_size: it stays "
        "as given whatever the number of processes (the gradient is the global batch's mean); "
        "scale it yourself only when you change batch_size.",
        default=0.03, gt=0, le=10)
    lr_milestones: tuple[float, ...] = _doc(
        "Fractions of a round at which the lr is multiplied by lr_decay (80/120/160 of 200).",
        default=(0.4, 0.6, 0.8), gt=0, le=1, max_items=32,
    )
    lr_decay: float = _doc("Multiplier applied at each milestone.", default=0.1, gt=0, le=1)
    momentum: float = _doc("SGD momentum.", default=0.9, ge=0, lt=1)
    nesterov: bool = _doc("Nesterov momentum, as in the reference.", default=True)
    weight_decay: float = _doc("L2 weight decay.", default=5e-4, ge=0, lt=1)
    # --- augmentation (the reference's CIFAR pipeline) -----------------------------------
    crop_scale_min: float = _doc(
        "Lower bound of RandomResizedCrop's area scale (upper is 1).", default=0.2, gt=0, le=1
    )
    color_jitter: float = _doc(
        "Strength of brightness, contrast, saturation and hue jitter.", default=0.4, ge=0, le=0.5
    )
    grayscale_p: float = _doc("Probability of turning a view grey.", default=0.2, ge=0, le=1)
    # --- evaluation ----------------------------------------------------------------------
    knn_k: int = _doc("Neighbours voting in weighted kNN evaluation.", default=200, ge=1,
                      le=100_000)
    knn_sigma: float = _doc("Temperature of the kNN vote weights exp(s/sigma).", default=0.1,
                            gt=0, le=100)
    eval_each_round: bool = _doc(
        "Measure kNN accuracy at the end of every round (labelled data only); it never "
        "selects a model.",
        default=True,
    )
    knn_every_epochs: int = _doc(
        "Also measure kNN accuracy every this many epochs (0 = only at round ends).", default=0,
        ge=0, le=10_000,
    )
    # --- index ---------------------------------------------------------------------------
    index: str = _doc(
        "FAISS index of the published collection: auto (exact up to 200k items, HNSW above), "
        "flat, ivf or hnsw.",
        default="auto", choices=INDEX_TYPES,
    )
    # --- runtime -------------------------------------------------------------------------
    seed: int = _doc("Seed of every random choice; a run is reproducible from it.", default=0,
                     ge=0, le=2**63 - 1, message="must be a non-negative integer below 2**63")
    device: str = _doc("auto (CUDA when present), cpu, cuda or cuda:N.", default="auto",
                       pattern=DEVICE_PATTERN, message="must be auto, cpu, cuda or cuda:N")
    precision: str = _doc(
        "auto (bf16 autocast where the hardware has it: CUDA, or a CPU with AMX/AVX512-BF16), "
        "bf16 or fp32. The memory bank and the loss always run in fp32.",
        default="auto", choices=("auto", "bf16", "fp32"),
    )
    channels_last: bool = _doc("Use the channels_last memory format for conv nets.", default=True)
    compile: str = _doc(
        "torch.compile the training forward pass: auto (CUDA runs of 2,000+ steps where a C "
        "compiler is present; on CPU it measured within +-8 % of eager), always or never.",
        default="auto", choices=("auto", "always", "never"),
    )
    num_workers: int = _doc(
        "Decoding processes; -1 = one per CPU core (up to 8).", default=-1, ge=-1, le=64
    )
    cache_images: str = _doc(
        "auto (decode every image once into memory when it fits in cache_max_gb), always or "
        "never (decode on the fly in worker processes).",
        default="auto", choices=("auto", "always", "never"),
    )
    cache_max_gb: float = _doc("Memory allowed for the decoded image cache.", default=4.0,
                               gt=0, le=1024)
    on_corrupt: str = _doc(
        "skip (report and leave out unreadable images) or fail (refuse the dataset).",
        default="skip", choices=("skip", "fail"),
    )
    gpus: int = _doc(
        "Training processes per machine: one per GPU on CUDA (DistributedDataParallel over "
        "NCCL), or that many CPU processes over Gloo. 1 = a single process.",
        default=1, ge=1, le=64,
    )
    nodes: int = _doc(
        "Machines taking part in the run (each runs gpus processes, started by torchrun; see "
        "docs/distributed.md). Jobs submitted over HTTP run on one machine.",
        default=1, ge=1, le=1024,
    )
    sync_bn: bool = _doc(
        "Batch-norm statistics over the global batch (synchronised between processes) instead "
        "of each process's share of it, as the reference did.",
        default=False,
    )
    checkpoint_interval_s: float = _doc(
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
        converted = {key: _coerce(key, hints[key], value, strict)
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
        return {k: v for k, v in self.to_dict().items() if k not in self.RUNTIME_KEYS}

    # --- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        for f in fields(self):
            problem = _bounds_problem(f.metadata, getattr(self, f.name))
            if problem:
                raise ConfigError(f.name, f"{problem} (got {_short(getattr(self, f.name))})")
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
            prop = {**_json_type(hints[f.name], f.metadata), "default": default,
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


def _bounds_problem(meta: Mapping[str, Any], value: Any) -> str | None:
    """What is wrong with `value` under a field's bounds (None: nothing)."""
    if "choices" in meta and value not in meta["choices"]:
        return meta.get("message") or f"must be one of {', '.join(meta['choices'])}"
    if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
        return meta.get("message") or f"must match {meta['pattern']}"
    items = value if isinstance(value, tuple) else (value,)
    if "max_items" in meta and len(items) > meta["max_items"]:
        return f"must have at most {meta['max_items']} items"
    if meta.get("zero_allowed") and value == 0:
        return None
    for x in items:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            continue
        if not (x >= meta.get("ge", x) and x <= meta.get("le", x)
                and ("gt" not in meta or x > meta["gt"]) and ("lt" not in meta or x < meta["lt"])):
            return meta.get("message") or _range_message(meta, isinstance(x, int))
    return None


def _range_message(meta: Mapping[str, Any], integer: bool) -> str:
    if integer and "ge" in meta and "le" in meta:
        return f"must be between {meta['ge']} and {meta['le']}"
    low = f"[{meta['ge']}" if "ge" in meta else f"({meta.get('gt', '-inf')}"
    high = f"{meta['le']}]" if "le" in meta else f"{meta.get('lt', 'inf')})"
    return f"must be in {low}, {high}"


def _json_type(hint: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    bounds = {key: meta[name] for name, key in (
        ("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum"),
        ("lt", "exclusiveMaximum")) if name in meta}
    if hint is bool:
        return {"type": "boolean"}
    if hint is str:
        if "choices" in meta:
            return {"type": "string", "enum": list(meta["choices"])}
        if "pattern" in meta:
            return {"type": "string", "pattern": f"^({meta['pattern']})$"}
        return {"type": "string"}
    if typing.get_origin(hint) is tuple:
        return {"type": "array", "items": {"type": "number", **bounds},
                **({"maxItems": meta["max_items"]} if "max_items" in meta else {})}
    kind = "integer" if hint is int else "number"
    if meta.get("zero_allowed"):
        return {"type": kind, "anyOf": [{"const": 0}, bounds]}
    return {"type": kind, **bounds}


def _coerce(key: str, hint: Any, value: Any, strict: bool = False) -> Any:
    """Check `value` against the field's type; ints are accepted for floats, lists for tuples
    (and, unless `strict`, "true"/"false" for booleans and one number for a list)."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if not strict and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(key, f"must be true or false (got {_short(value)})")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(key, f"must be an integer (got {_short(value)})")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer too large for a float
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(key, f"must be a finite number (got {_short(value)})")
            return number
        raise ConfigError(key, f"must be a number (got {_short(value)})")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"must be a string (got {_short(value)})")
    if origin is tuple:
        if not strict and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"must be a list of numbers (got {_short(value)})")
        (item_hint, _) = typing.get_args(hint)
        return tuple(_coerce(key, item_hint, v, strict) for v in value)
    raise ConfigError(key, f"unsupported type {hint!r}")  # pragma: no cover


def _short(value: Any) -> str:
    """repr(value) for a message, cut short (an int of 4,300+ digits has no repr at all)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + f"... ({len(text)} characters)"
