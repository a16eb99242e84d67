"""A user's own images: folders, zip/tar archives and .npz arrays, with stable ids and labels.

Layouts understood (after unwrapping a single top folder, as archives usually have):
  root/<split>/<class>/*   labelled, with splits (train; test/val are evaluation-only)
  root/<split>/*           unlabelled, with splits
  root/<class>/*           labelled
  root/*  (or any nesting) unlabelled
An item's id is its path relative to that root, e.g. `train/cat/0001.jpg`.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

import numpy as np

from trainer.errors import DatasetError
from trainer.images import InvalidImage, array_to_square, decode_square, is_image_name

TRAIN_SPLIT = "train"
EVAL_SPLITS = frozenset({"test", "val", "valid", "validation"})
SPLITS = EVAL_SPLITS | {TRAIN_SPLIT}
MIN_TRAIN_IMAGES = 10
_JUNK_PREFIXES = (".", "__MACOSX")


class Source(Protocol):
    """Reads item i as a square uint8 RGB array; must be usable from forked processes."""

    def load(self, i: int, size: int) -> np.ndarray: ...


@dataclass
class Collection:
    """What a training run, an evaluation or a bundle needs to know about a dataset."""

    name: str
    ids: list[str]
    labels: np.ndarray  # int64, -1 where unknown
    classes: list[str]
    is_eval: np.ndarray  # bool: in an evaluation split, never trained on
    source: Source
    ignored: list[str] = field(default_factory=list)  # non-image files, for the report
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, why) corrupt images
    # Row of `source` behind each item: the identity until corrupt items are dropped.
    source_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if len(self.source_index) != len(self.ids):
            self.source_index = np.arange(len(self.ids), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def train_indices(self) -> np.ndarray:
        return np.flatnonzero(~self.is_eval)

    @property
    def eval_indices(self) -> np.ndarray:
        return np.flatnonzero(self.is_eval)

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).any())

    @property
    def has_labelled_eval(self) -> bool:
        return bool((self.labels[self.is_eval] >= 0).any())

    def load(self, i: int, size: int) -> np.ndarray:
        return self.source.load(int(self.source_index[i]), size)

    def subset(self, keep: np.ndarray, skipped: Sequence[tuple[str, str]] = ()) -> Collection:
        keep = np.asarray(keep)
        return Collection(
            name=self.name,
            ids=[self.ids[i] for i in keep],
            labels=self.labels[keep],
            classes=self.classes,
            is_eval=self.is_eval[keep],
            source=self.source,
            ignored=self.ignored,
            skipped=[*self.skipped, *skipped],
            source_index=self.source_index[keep],
        )

    def summary(self) -> dict:
        """Counts for reports and the API: items, classes, split sizes."""
        splits: dict[str, int] = {}
        for item_id, ev in zip(self.ids, self.is_eval, strict=True):
            top = item_id.split("/", 1)[0]
            key = top if top in SPLITS else ("eval" if ev else TRAIN_SPLIT)
            splits[key] = splits.get(key, 0) + 1
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.classes))
        return {
            "items": len(self),
            "train_items": int((~self.is_eval).sum()),
            "eval_items": int(self.is_eval.sum()),
            "labelled": bool(self.has_labels),
            "classes": list(self.classes),
            "class_counts": {c: int(n) for c, n in zip(self.classes, counts, strict=True)},
            "splits": splits,
            "ignored_files": len(self.ignored),
            "skipped": [{"id": i, "reason": r} for i, r in self.skipped],
        }

    def check_trainable(self) -> None:
        """Refuse, before any training, datasets that cannot give a meaningful run."""
        n_train = int((~self.is_eval).sum())
        if len(self) == 0:
            raise DatasetError(f"dataset {self.name!r} holds no readable images")
        if n_train < MIN_TRAIN_IMAGES:
            raise DatasetError(
                f"dataset {self.name!r} has {n_train} training images; at least "
                f"{MIN_TRAIN_IMAGES} are needed"
            )


# --- opening a dataset ------------------------------------------------------------------

def open_collection(path: str | os.PathLike[str], name: str | None = None,
                    work_dir: str | None = None) -> Collection:
    """Open a folder, a .zip, a .tar(.gz|.bz2|.xz) or a .npz as a Collection."""
    p = Path(path)
    name = name or p.name
    if not p.exists():
        raise DatasetError(f"dataset path {str(p)!r} does not exist")
    if p.is_dir():
        files = [
            f.relative_to(p).as_posix()
            for f in sorted(p.rglob("*"))
            if f.is_file() and not f.is_symlink()
        ]
        return _from_paths(name, files, FolderSource(str(p)))
    suffixes = "".join(p.suffixes[-2:]).lower()
    if p.suffix.lower() == ".zip":
        return _open_zip(p, name)
    if p.suffix.lower() == ".npz":
        return _open_npz(p, name)
    if ".tar" in suffixes or p.suffix.lower() in (".tgz", ".tbz2", ".txz"):
        return _open_tar(p, name, work_dir)
    raise DatasetError(
        f"{p.name}: unsupported dataset format; use a folder, .zip, .tar(.gz) or .npz"
    )


def _safe_member(name: str) -> str | None:
    """Normalised relative path of an archive member, or None if it escapes the root."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or any(part == ".." for part in posix.parts):
        return None
    return posix.as_posix()


def _open_zip(path: Path, name: str) -> Collection:
    try:
        with zipfile.ZipFile(path) as zf:
            members = [i.filename for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path.name}: not a readable zip archive ({exc})") from exc
    safe = {_safe_member(m): m for m in members}
    safe.pop(None, None)
    return _from_paths(name, sorted(safe), ZipSource(str(path), safe))


def _open_tar(path: Path, name: str, work_dir: str | None) -> Collection:
    if path.suffix.lower() != ".tar":
        return _open_compressed_tar(path, name, work_dir)
    try:
        tf = tarfile.open(path)  # noqa: SIM115 - closed below, after the members are read
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(f"{path.name}: not a readable tar archive ({exc})") from exc
    with tf:
        members = [m for m in tf.getmembers() if m.isfile()]  # links are never followed
        safe = {s: m for m in members if (s := _safe_member(m.name))}
        # Uncompressed: read members in place by offset, from any process.
        offsets = {rel: (m.offset_data, m.size) for rel, m in safe.items()}
    return _from_paths(name, sorted(offsets), TarSource(str(path), offsets))


# --- compressed tars: extracted once, next to the archive --------------------------------
#
# A compressed tar has no random access, and merely listing it decompresses all of it. So its
# images are extracted once, into a hidden folder beside the archive (or in `work_dir`), named
# after the archive's size and mtime (a replaced archive is extracted again and the old
# extraction removed), with the list of every member. Every later open (each training job, each
# dataset summary) reads that folder and its list instead. The extraction is written under a
# temporary name and renamed into place, under a lock: concurrent openers wait for one
# extraction and never see half of one.

_LISTING = ".members.json"


def _open_compressed_tar(path: Path, name: str, work_dir: str | None) -> Collection:
    real = path.resolve()
    try:
        st = real.stat()
    except OSError as exc:
        raise DatasetError(f"{path.name}: not a readable tar archive ({exc})") from exc
    base = f".{real.name}"  # hidden: never listed as a dataset of its own
    key = f"{st.st_size}-{st.st_mtime_ns}"
    folder = Path(work_dir) if work_dir is not None else real.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{base}.{key}.extracted"
        listing = _read_listing(target)
        if listing is None:
            listing = _extract_once(real, folder, base, target)
    except PermissionError:
        # A read-only folder (an archive outside any data root): a private extraction,
        # removed when this process exits.
        target = Path(tempfile.mkdtemp(prefix="and-tar-"))
        atexit.register(shutil.rmtree, target, ignore_errors=True)
        listing = _extract(real, target)
    return _from_paths(name, listing, FolderSource(str(target)))


def _read_listing(target: Path) -> list[str] | None:
    try:
        return json.loads((target / _LISTING).read_text())
    except (OSError, ValueError):
        return None


def _extract_once(archive: Path, folder: Path, base: str, target: Path) -> list[str]:
    with open(folder / f"{base}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        listing = _read_listing(target)  # extracted by another process while we waited
        if listing is not None:
            return listing
        # Under the lock, anything else of this archive is stale: an older version's
        # extraction, or one a crash interrupted.
        ours = re.compile(re.escape(base) + r"\.(\d+-\d+\.extracted|extracting-[\w-]+)")
        for old in folder.iterdir():
            if (ours.fullmatch(old.name) and old != target and old.is_dir()
                    and not old.is_symlink()):
                shutil.rmtree(old, ignore_errors=True)
        work = folder / f"{base}.extracting-{os.getpid()}-{secrets.token_hex(3)}"
        try:
            listing = _extract(archive, work)
            os.rename(work, target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return listing


def _extract(archive: Path, target: Path) -> list[str]:
    """Write the archive's images under `target` with the list of all its safe members."""
    try:
        tf = tarfile.open(archive)  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(f"{archive.name}: not a readable tar archive ({exc})") from exc
    target.mkdir(parents=True, exist_ok=True)
    names = []
    try:
        with tf:
            for member in tf:  # one pass over the stream
                rel = _safe_member(member.name) if member.isfile() else None  # no links
                if rel is None:
                    continue
                names.append(rel)
                src = tf.extractfile(member) if is_image_name(rel) else None
                if src is not None:
                    dest = target / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{archive.name}: not a readable tar archive ({exc})") from exc
    names = sorted(set(names))
    (target / _LISTING).write_text(json.dumps(names))
    return names


def _open_npz(path: Path, name: str) -> Collection:
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path.name}: not a readable .npz file ({exc})") from exc

    def pick(*keys: str) -> np.ndarray | None:
        for k in keys:
            if k in arrays:
                return arrays[k]
        return None

    x = pick("x_train", "X_train", "x", "X", "images", "data", "train_images")
    if x is None:
        raise DatasetError(
            f"{path.name}: no image array; name it x, images or x_train (found "
            f"{', '.join(arrays) or 'nothing'})"
        )
    y = pick("y_train", "Y_train", "y", "Y", "labels", "targets", "train_labels")
    x_test = pick("x_test", "X_test", "test_images")
    y_test = pick("y_test", "Y_test", "test_labels")
    class_names = pick("classes", "class_names")
    if x.ndim not in (3, 4) or len(x) == 0:
        raise DatasetError(f"{path.name}: image array has shape {x.shape}; expected N x H x W(xC)")
    parts = [("train", x, y)] + ([("test", x_test, y_test)] if x_test is not None else [])
    ids: list[str] = []
    labels: list[int] = []
    is_eval: list[bool] = []
    images: list[np.ndarray] = []
    raw_labels = [lab for _, _, lab in parts if lab is not None]
    label_values = np.unique(np.concatenate([np.asarray(r).ravel() for r in raw_labels])) if (
        raw_labels) else np.array([])
    if class_names is not None:
        classes = [str(c) for c in class_names]
    else:
        classes = [str(v) for v in label_values]
    lookup = {v: i for i, v in enumerate(label_values.tolist())}
    for split, xs, ys in parts:
        if ys is not None and len(ys) != len(xs):
            raise DatasetError(f"{path.name}: {len(xs)} {split} images but {len(ys)} labels")
        width = max(5, len(str(len(xs) - 1)))
        for i in range(len(xs)):
            ids.append(f"{split}/{i:0{width}d}" if len(parts) > 1 else f"{i:0{width}d}")
            if ys is None:
                labels.append(-1)
            elif class_names is not None:
                labels.append(int(ys[i]))
            else:
                labels.append(lookup[np.asarray(ys[i]).item()])
            is_eval.append(split != "train")
        images.append(xs)
    collection = Collection(
        name=name, ids=ids, labels=np.asarray(labels, dtype=np.int64), classes=classes,
        is_eval=np.asarray(is_eval, dtype=bool), source=ArraySource(images),
    )
    _refuse_single_class(collection)
    return collection


def _from_paths(name: str, paths: list[str], source: PathSource) -> Collection:
    paths = [p for p in paths if not any(part.startswith(_JUNK_PREFIXES) for part in p.split("/"))]
    images = [p for p in paths if is_image_name(p)]
    ignored = [p for p in paths if not is_image_name(p)]
    if not images:
        raise DatasetError(
            f"dataset {name!r} holds no images (JPEG, PNG, WebP, BMP, GIF or TIFF)"
            + (f"; found {len(ignored)} other files" if ignored else "")
        )
    # Unwrap single top folders: "cifar10/train/cat/x.jpg" is read as "train/cat/x.jpg".
    prefix = ""
    parts = [p.split("/") for p in images]
    while all(len(p) > 1 for p in parts) and len({p[0] for p in parts}) == 1:
        prefix += parts[0][0] + "/"
        parts = [p[1:] for p in parts]
    rel = ["/".join(p) for p in parts]

    tops = {p[0] for p in parts if len(p) > 1}
    has_splits = all(len(p) > 1 for p in parts) and tops <= SPLITS
    splits = [p[0] if has_splits else TRAIN_SPLIT for p in parts]
    inner = [p[1:] if has_splits else p for p in parts]
    # Labelled when, within every split, every image sits in a class folder.
    labelled_splits = {
        s for s in set(splits)
        if all(len(q) > 1 for q, sp in zip(inner, splits, strict=True) if sp == s)
    }
    class_of = [q[0] if sp in labelled_splits else None
                for q, sp in zip(inner, splits, strict=True)]
    classes = sorted({c for c in class_of if c is not None})
    index = {c: i for i, c in enumerate(classes)}
    collection = Collection(
        name=name,
        ids=rel,
        labels=np.asarray([index[c] if c is not None else -1 for c in class_of], dtype=np.int64),
        classes=classes,
        is_eval=np.asarray([s in EVAL_SPLITS for s in splits], dtype=bool),
        source=source.rooted(prefix, rel),
        ignored=ignored,
    )
    if not (~collection.is_eval).any():
        raise DatasetError(
            f"dataset {name!r} has only evaluation splits ({', '.join(sorted(set(splits)))}); "
            "add a train split or put the images in class folders"
        )
    _refuse_single_class(collection)
    return collection


def _refuse_single_class(collection: Collection) -> None:
    if collection.has_labels and len(collection.classes) == 1:
        raise DatasetError(
            f"dataset {collection.name!r} has class folders but only one class "
            f"({collection.classes[0]!r}); use a flat folder for unlabelled images or add classes"
        )


# --- sources ----------------------------------------------------------------------------

class PathSource:
    """Base for sources addressed by relative path; `rooted` binds the item order."""

    paths: list[str]

    def rooted(self, prefix: str, rel: list[str]) -> PathSource:
        self.paths = [prefix + r for r in rel]
        return self

    def read(self, path: str) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def load(self, i: int, size: int) -> np.ndarray:
        path = self.paths[i]
        try:
            data = self.read(path)
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise InvalidImage(f"cannot read {path}: {exc}") from exc
        return decode_square(data, size)


class FolderSource(PathSource):
    def __init__(self, root: str) -> None:
        self.root = root

    def read(self, path: str) -> bytes:
        with open(os.path.join(self.root, path), "rb") as f:
            return f.read()


class ZipSource(PathSource):
    def __init__(self, archive: str, members: dict[str, str]) -> None:
        self.archive = archive
        self.members = members
        self._handle: zipfile.ZipFile | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def read(self, path: str) -> bytes:
        # One handle per process: a ZipFile shared across fork is not safe.
        if self._handle is None or self._pid != os.getpid():
            self._handle = zipfile.ZipFile(self.archive)
            self._pid = os.getpid()
        return self._handle.read(self.members[path])


class TarSource(PathSource):
    def __init__(self, archive: str, offsets: dict[str, tuple[int, int]]) -> None:
        self.archive = archive
        self.offsets = offsets

    def read(self, path: str) -> bytes:
        offset, size = self.offsets[path]
        with open(self.archive, "rb") as f:
            f.seek(offset)
            return f.read(size)


class ArraySource:
    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def load(self, i: int, size: int) -> np.ndarray:
        part = int(np.searchsorted(self.starts, i, side="right") - 1)
        return array_to_square(self.parts[part][i - self.starts[part]], size)
