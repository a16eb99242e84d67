"""Model bundles: the published, versioned unit the service loads.

    models/<version>/
        manifest.json      version, created, dataset, backbone, dim, items, index, metrics, ...
        encoder.pt         weights + preprocessing (input size, mean, std)
        config.json        the training config
        index.faiss        FAISS index, row r = item r
        embeddings.npy     N x dim float32 unit vectors
        items.json         {"ids": [...], "labels": [class index or -1], "classes": [...]}
        map.npy, map_rows.npy   2-D map of (a sample of) the items (trainer/embedding_map.py)
        metrics.json, progress.jsonl, curves.png   from the training run
        skipped.json       the images the run could not read, and why (when there were any)
        encoder.onnx, encoder.onnx.json   the encoder as ONNX, added when first asked for
                                          (trainer/export.py; derived from encoder.pt alone)
    models/collections/<dataset>/CURRENT   the version each dataset's collection serves
                                           (trainer/current.py)

A bundle is written under a temporary name (`.tmp-*`), validated, its files and then its
folder fsynced, renamed into place, and the models folder fsynced; only then may a CURRENT name
it, and CURRENT itself is replaced atomically and durably. So after a crash or a power loss
CURRENT names a whole bundle, and a bundle that fails validation never becomes current.
Temporary folders a crash left behind are removed by `trainer.leftovers.sweep_leftovers`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import embedding_map, unit_vectors
from trainer import index as faiss_index
from trainer.current import current_version as current_version
from trainer.current import dataset_of, register, unregister
from trainer.current import previous_version as previous_version
from trainer.current import rollback as rollback
from trainer.current import safe_name as _safe_name
from trainer.current import set_current as set_current
from trainer.encoder_file import Embedder, EmbeddingModel
from trainer.engines import load_embedder
from trainer.errors import BundleError
from trainer.files import atomic_file, atomic_write_json, fsync_dir, fsync_file
from trainer.leftovers import TMP_PREFIX

log = logging.getLogger(__name__)
FORMAT = 1
RUN_FILES = ("encoder.pt", "config.json", "metrics.json", "progress.jsonl", "curves.png",
             "skipped.json")


def new_version(tag: str = "") -> str:
    """Sortable, unique without coordination: 20261126-141503-<tag or random>."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    suffix = "".join(c for c in tag if c.isalnum())[:8] or secrets.token_hex(4)
    return f"{stamp}-{suffix}"


def write_bundle(run_dir: str | os.PathLike[str], models_root: str | os.PathLike[str], *,
                 dataset: str, version: str | None = None, index_kind: str | None = None,
                 extra: dict[str, Any] | None = None, exist_ok: bool = False,
                 check: Callable[[], None] | None = None,
                 embeddings: str | os.PathLike[str] | None = None,
                 extra_json: dict[str, Any] | None = None,
                 map_points: int = embedding_map.MAX_POINTS) -> Path:
    """Build a bundle from a finished training run; returns its final path (not yet current).

    `exist_ok`: a valid bundle of this version already there (published by an earlier attempt
    of the same job, or by a process that finished first) is kept and its path returned.
    `check` is called between the steps (copy, index build, validation, rename); whatever it
    raises aborts the bundle, leaving nothing behind. `embeddings`: the items to index, when
    not the run's own embeddings.npz (e.g. with later changes applied); `extra_json`: more
    files of the bundle, name -> JSON value; `map_points`: most items of its 2-D map (0: no
    map).
    """
    run, root = Path(run_dir), Path(models_root)
    root.mkdir(parents=True, exist_ok=True)
    version = version or new_version()
    final = root / version
    check = check or (lambda: None)
    if final.exists():
        if exist_ok:
            validate(final)
            register(root, dataset)
            return final
        raise BundleError(f"model version {version} already exists")
    require_finished_run(run, embeddings_given=embeddings is not None)
    tmp = root / f"{TMP_PREFIX}{version}-{secrets.token_hex(3)}"
    tmp.mkdir()
    try:
        for name in RUN_FILES:
            if (run / name).exists():
                shutil.copy2(run / name, tmp / name)
        check()
        config = json.loads((run / "config.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        with np.load(embeddings or run / "embeddings.npz") as saved:
            vectors = np.ascontiguousarray(saved["vectors"], dtype=np.float32)
            ids = [str(i) for i in saved["ids"]]
            labels = saved["labels"].astype(int).tolist()
            classes = [str(c) for c in saved["classes"]]
        bad = unit_vectors.off_unit_rows(vectors)
        if len(bad):  # never published: every search would put these items first
            raise BundleError("the embeddings to publish are not usable: "
                              + unit_vectors.describe(vectors, bad, ids))
        with atomic_file(tmp / "embeddings.npy") as f:
            np.save(f, vectors)
        atomic_write_json(tmp / "items.json", {"ids": ids, "labels": labels, "classes": classes})
        built = faiss_index.build(vectors, index_kind or config.get("index", "auto"))
        faiss_index.save(built, tmp / "index.faiss")
        shown = _write_map(tmp, vectors, map_points)
        check()
        manifest = {
            "format": FORMAT,
            "version": version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dataset": dataset,
            "backbone": config["backbone"],
            "dim": int(vectors.shape[1]),
            "image_size": config.get("image_size") or None,
            "item_count": len(ids),
            "labelled_items": int(sum(1 for lab in labels if lab >= 0)),
            "classes": classes,
            "index": built.describe(),
            "metrics": metrics,
            "training_time_s": metrics.get("training_time_s"),
            "config": config,
            "map_points": shown,
            # Which pretrained weights the run started from (init_from=imagenet).
            **({"init_weights": metrics["init_weights"]} if metrics.get("init_weights") else {}),
            **(extra or {}),
        }
        for name, value in (extra_json or {}).items():
            atomic_write_json(tmp / name, value)
        atomic_write_json(tmp / "manifest.json", manifest)
        validate(tmp)
        # Files first, then the folder that names them: after a power loss the bundle is
        # either absent or whole, never a folder of empty files.
        for part in tmp.iterdir():
            fsync_file(part)
        fsync_dir(tmp)
        check()
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if not (exist_ok and final.exists()):
                raise BundleError(f"model version {version} could not be published: "
                                  f"{exc}") from exc
            validate(final)  # the same job's bundle, published first by another process
            shutil.rmtree(tmp, ignore_errors=True)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    register(root, dataset)  # its collection exists from now on, current model or not
    return final


def require_finished_run(run: Path, embeddings_given: bool = False) -> None:
    """Raise BundleError naming the files a bundle needs that `run` lacks (its embeddings.npz
    too unless the items to index are `embeddings_given`)."""
    needed = ["encoder.pt", "config.json", "metrics.json"]
    needed += [] if embeddings_given else ["embeddings.npz"]
    missing = [name for name in needed if not (run / name).is_file()]
    if missing:
        raise BundleError(f"{run} is not a finished training run (no {', '.join(missing)})")


def _write_map(bundle_dir: Path, vectors: np.ndarray, max_points: int) -> int | None:
    """The 2-D map is for people to look at: a model whose map failed (or that was published
    with maps off) still serves."""
    if max_points <= 0:
        return None
    try:
        return embedding_map.write(bundle_dir, vectors, max_points)
    except Exception:
        log.warning("could not compute the embedding map; publishing without one",
                    exc_info=True)
        return None


def withdraw(models_root: str | os.PathLike[str], version: str) -> None:
    """Remove a published bundle that must not be offered (its job was canceled before it
    became current). Renamed away first, so it disappears whole; never the current one."""
    root = Path(models_root)
    if not _safe_name(version) or not (root / version).is_dir():
        return
    dataset = dataset_of(root, version)
    if current_version(root, dataset) == version:
        raise BundleError(f"model version {version} is current; it cannot be withdrawn")
    gone = root / f"{TMP_PREFIX}{version}-withdrawn-{secrets.token_hex(3)}"
    os.rename(root / version, gone)
    fsync_dir(root)
    shutil.rmtree(gone, ignore_errors=True)
    if not any(dataset_of(root, v) == dataset for v in list_versions(root)):
        unregister(root, dataset)  # its only version: the collection goes with it


def validate(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load every part and check that they agree; raise BundleError otherwise."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        items = json.loads((path / "items.json").read_text())
        vectors = np.load(path / "embeddings.npy", mmap_mode="r")
        built = faiss_index.load(path / "index.faiss", manifest["index"])
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BundleError(f"bundle {path.name} is incomplete: {exc}") from exc
    model = EmbeddingModel.load(path / "encoder.pt", device="cpu", precision="fp32")
    n, dim = manifest["item_count"], manifest["dim"]
    problems = []
    if len(items["ids"]) != n or len(items["labels"]) != n:
        problems.append(f"items.json lists {len(items['ids'])} items, manifest says {n}")
    if len(set(items["ids"])) != len(items["ids"]):
        problems.append("item ids are not unique")
    if vectors.shape != (n, dim):
        problems.append(f"embeddings are {vectors.shape}, expected {(n, dim)}")
    elif len(bad := unit_vectors.off_unit_rows(vectors)):
        named = items["ids"] if len(items["ids"]) == n else None
        problems.append(unit_vectors.describe(vectors, bad, named))
    if built.ntotal != n or built.dim != dim:
        problems.append(f"index holds {built.ntotal} x {built.dim}, expected {n} x {dim}")
    if model.meta.dim != dim:
        problems.append(f"encoder outputs {model.meta.dim} dimensions, expected {dim}")
    else:
        size = model.meta.image_size
        out = model.embed_uint8(torch.zeros(1, 3, size, size, dtype=torch.uint8))
        if out.shape != (1, dim) or not np.isfinite(out).all():
            problems.append("encoder does not produce finite embeddings")
    if problems:
        raise BundleError(f"bundle {path.name} is invalid: " + "; ".join(problems))
    return manifest


def list_versions(models_root: str | os.PathLike[str]) -> list[str]:
    root = Path(models_root)
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").exists())


def read_manifest(models_root: str | os.PathLike[str], version: str) -> dict[str, Any]:
    path = Path(models_root) / version / "manifest.json"
    if not _safe_name(version) or not path.exists():
        raise BundleError(f"no model version {version!r}")
    return json.loads(path.read_text())


@dataclass
class Bundle:
    """A bundle loaded for serving: encoder, index, ids, labels and vectors."""

    version: str
    path: Path
    manifest: dict[str, Any]
    model: Embedder
    index: faiss_index.SearchIndex
    ids: list[str]
    row_of: dict[str, int]
    labels: np.ndarray
    classes: list[str]
    vectors: np.ndarray
    loaded_at: float

    @classmethod
    def load(cls, models_root: str | os.PathLike[str], version: str, device: str = "auto",
             precision: str = "auto", engine: str = "torch", threads: int = 1) -> Bundle:
        """`engine` and `threads`: what runs the encoder (trainer/engines.py)."""
        path = Path(models_root) / version
        manifest = read_manifest(models_root, version)
        items = json.loads((path / "items.json").read_text())
        ids = items["ids"]
        return cls(
            version=version, path=path, manifest=manifest,
            model=load_embedder(path, engine, device, precision, threads),
            index=faiss_index.load(path / "index.faiss", manifest["index"]),
            ids=ids, row_of={item: i for i, item in enumerate(ids)},
            labels=np.asarray(items["labels"], dtype=np.int64), classes=items["classes"],
            vectors=np.load(path / "embeddings.npy"), loaded_at=time.time(),
        )

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def labelled(self) -> bool:
        return bool((self.labels >= 0).any()) and len(self.classes) >= 2
