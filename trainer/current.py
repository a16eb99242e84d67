"""Which version each collection serves: one CURRENT (and PREVIOUS, for rollback) per dataset.

    models/<version>/                     bundles, every dataset's side by side (trainer/bundle.py)
    models/collections/<dataset>/CURRENT  the version the dataset's collection serves
    models/collections/<dataset>/PREVIOUS the one it served before its last move

A collection is a dataset and what serves it: a version belongs to the dataset its manifest
names, and making it current moves that dataset's pointer only, so training one dataset never
replaces another's model. Each pointer is replaced atomically and durably (trainer/files.py).

A models folder written before collections had one `models/CURRENT` (and `PREVIOUS`): every
function here migrates it first (a stat when there is nothing to do). The old CURRENT becomes
its dataset's CURRENT; the old PREVIOUS its dataset's PREVIOUS when both are one dataset's (or
the old CURRENT names no readable bundle), else the CURRENT of its own dataset (it was that
dataset's served model until the other replaced it). A pointer already written is never
overwritten, so a migration racing another process's (or a publish made after it) changes
nothing; the old files go last, CURRENT the very last.
Kept free of torch and FAISS, like trainer/leftovers.py.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from trainer.errors import BundleError
from trainer.files import atomic_file, fsync_dir
from trainer.leftovers import COLLECTIONS, CURRENT, PREVIOUS

log = logging.getLogger(__name__)
UNNAMED = "default"  # the collection of a bundle whose manifest names no dataset


def dataset_of(models_root: str | os.PathLike[str], version: str) -> str:
    """The collection a version belongs to: the dataset its manifest names."""
    path = Path(models_root) / version / "manifest.json"
    if not safe_name(version) or not path.is_file():
        raise BundleError(f"no model version {version!r}")
    try:
        dataset = json.loads(path.read_text()).get("dataset")
    except (OSError, ValueError) as exc:
        raise BundleError(f"model version {version!r} has no readable manifest") from exc
    return str(dataset) if dataset else UNNAMED


def safe_name(name: str) -> bool:
    """A name that is one folder entry (a version, a collection)."""
    return bool(name) and not any(c in name for c in "/\\\x00") and not (
        name.startswith(".")) and len(name) <= 255


def _folder(models_root: str | os.PathLike[str], collection: str) -> Path:
    if not safe_name(collection):
        raise BundleError(f"no collection {collection!r}")
    return Path(models_root) / COLLECTIONS / collection


def _pointer(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def _write(path: Path, version: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write((version + "\n").encode())


def _create(path: Path, version: str) -> bool:
    """Write the pointer only if there is none (a hard link refuses an existing name, so a
    concurrent writer's pointer is never replaced); True when written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fsync_dir(path.parent.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write((version + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def migrate(models_root: str | os.PathLike[str]) -> list[str]:
    """Move a single-CURRENT models folder to one pointer per collection; returns what was
    written (`collection/POINTER=version`), empty when there was nothing to migrate."""
    root = Path(models_root)
    old_current, old_previous = _pointer(root / CURRENT), _pointer(root / PREVIOUS)
    if old_current is None and not (root / CURRENT).exists():
        return []
    written = []
    moves: list[tuple[str, str, str]] = []  # (collection, pointer, version)
    home = _dataset_or_none(root, old_current) if old_current is not None else None
    if old_current is not None and home is not None:
        moves.append((home, CURRENT, old_current))
    other = _dataset_or_none(root, old_previous) if old_previous is not None else None
    if old_previous is not None and other is not None:
        # Another dataset's: it was that dataset's served model until this one replaced it.
        moves.append((other, PREVIOUS if other == home or home is None else CURRENT,
                      old_previous))
    # PREVIOUS pointers first, then CURRENT ones: as set_current orders them.
    for collection, name, version in sorted(moves, key=lambda m: m[1] != PREVIOUS):
        if _create(_folder(root, collection) / name, version):
            written.append(f"{collection}/{name}={version}")
    for name in (PREVIOUS, CURRENT):
        (root / name).unlink(missing_ok=True)
    fsync_dir(root)
    if written:
        log.info("models folder migrated to one current version per collection: %s",
                 ", ".join(written))
    return written


def _dataset_or_none(root: Path, version: str) -> str | None:
    try:
        return dataset_of(root, version)
    except BundleError:
        log.warning("the old pointer names version %r, which is not a readable bundle: "
                    "dropped in the migration", version)
        return None


def _migrated(models_root: str | os.PathLike[str]) -> Path:
    root = Path(models_root)
    if (root / CURRENT).exists():
        migrate(root)
    return root


def collections(models_root: str | os.PathLike[str], published: bool = False) -> list[str]:
    """The collections that have (or had) a current version, by name; `published`: also
    those whose every version is a candidate (register)."""
    folder = _migrated(models_root) / COLLECTIONS
    try:
        return sorted(p.name for p in folder.iterdir()
                      if p.is_dir() and safe_name(p.name) and (published or
                                                               (p / CURRENT).exists()))
    except FileNotFoundError:
        return []


def register(models_root: str | os.PathLike[str], collection: str) -> None:
    """A collection exists once a version of its dataset is published, current or not (a
    first model the promotion gate kept out is still there to look at and promote): its
    folder, which holds its pointers once it has any."""
    folder = _folder(_migrated(models_root), collection)
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        fsync_dir(folder.parent)


def unregister(models_root: str | os.PathLike[str], collection: str) -> None:
    """Undo `register` for a collection that never had a current version (its only version
    withdrawn); one with pointers stays."""
    folder = _folder(_migrated(models_root), collection)
    try:
        folder.rmdir()  # only when empty: a CURRENT or PREVIOUS keeps it
    except OSError:
        return
    fsync_dir(folder.parent)


def register_published(models_root: str | os.PathLike[str]) -> None:
    """Register the collection of every published version: those published before
    publication registered them (a scan of the manifests, once at start-up)."""
    root = _migrated(models_root)
    try:
        folders = [p for p in root.iterdir() if (p / "manifest.json").is_file()]
    except FileNotFoundError:
        return
    for folder in folders:
        try:
            register(root, dataset_of(root, folder.name))
        except (BundleError, OSError) as exc:
            log.warning("version %s: its collection is not registered (%s)", folder.name, exc)


def _only(root: Path) -> str | None:
    names = collections(root)
    if len(names) > 1:
        raise BundleError(f"there are several collections ({', '.join(names)}): name one")
    return names[0] if names else None


def current_version(models_root: str | os.PathLike[str],
                    collection: str | None = None) -> str | None:
    """The version `collection` serves (None: the only collection, when there is one)."""
    return _read(models_root, collection, CURRENT)


def previous_version(models_root: str | os.PathLike[str],
                     collection: str | None = None) -> str | None:
    """The version the collection served before its current one (None: none was)."""
    return _read(models_root, collection, PREVIOUS)


def _read(models_root: str | os.PathLike[str], collection: str | None, name: str) -> str | None:
    root = _migrated(models_root)
    collection = collection if collection is not None else _only(root)
    if collection is None or not safe_name(collection):
        return None
    return _pointer(_folder(root, collection) / name)


def set_current(models_root: str | os.PathLike[str], version: str) -> str:
    """Atomically make `version` (a valid bundle) the current version of its dataset's
    collection, remembering the one it named before in PREVIOUS (written first: a crash between
    the two leaves the old CURRENT in place, and PREVIOUS naming a version still valid).
    Returns the collection."""
    root = _migrated(models_root)
    collection = dataset_of(root, version)
    folder = _folder(root, collection)
    before = _pointer(folder / CURRENT)
    if before == version:
        return collection
    if before is not None:
        _write(folder / PREVIOUS, before)
    _write(folder / CURRENT, version)
    return collection


def rollback(models_root: str | os.PathLike[str], collection: str | None = None) -> str:
    """Make the collection's previous current version current again (and remember the one it
    replaces, so a second rollback undoes the first); returns it."""
    previous = previous_version(models_root, collection)
    if previous is None or not (Path(models_root) / previous / "manifest.json").exists():
        raise BundleError("there is no previous model version to roll back to")
    set_current(models_root, previous)
    return previous
