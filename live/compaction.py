"""Compacting a dataset's change log when a job publishes, and removing the images that no one
names any more.

A publish folds the log into its bundle up to the position it covers. The log then drops the
entries superseded up to a floor (state/changes.py says why every reader still converges; the
floor, the lowest snapshot a job still needs, is worker/live.py's), and the images of the
entries dropped are removed, unless something still names them: an entry kept, a bundle of the
dataset (any version may be loaded, pinned or made current again) or `also_named` (a job's
snapshot). Files are removed only after the drop committed; a file is never written again
under the same name (live/items.py), so a file named by a dropped entry is never an add in
flight.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from live.items import ITEMS_DIR, confined
from live.publish import ADDED_FILE
from state.changes import ADD, ChangeLog
from trainer.bundle import list_versions, read_manifest
from trainer.errors import BundleError

log = logging.getLogger(__name__)


def bundle_images(models_root: Path, dataset: str) -> set[str]:
    """The added images every published bundle of `dataset` indexes (their added.json)."""
    named: set[str] = set()
    for version in list_versions(models_root):
        try:
            if read_manifest(models_root, version).get("dataset") != dataset:
                continue
            added = json.loads((models_root / version / ADDED_FILE).read_text())
        except FileNotFoundError:
            continue  # published before the log existed, or withdrawn meanwhile
        except (OSError, ValueError, BundleError) as exc:
            # Unreadable: it cannot be told what the bundle names, so nothing is removed.
            raise BundleError(f"bundle {version}: {ADDED_FILE} cannot be read ({exc})") from exc
        named.update(p for p in added.values() if isinstance(p, str))
    return named


def named_images(changes: ChangeLog, dataset: str, models_root: Path | None,
                 also_named: Iterable[str] = ()) -> set[str]:
    """Every added image something still needs: the log's entries, the dataset's bundles and
    `also_named` (paths relative to the dataset root)."""
    named = set(also_named) | changes.image_paths(dataset)
    if models_root is not None:
        named |= bundle_images(models_root, dataset)
    return named


def own_image(dataset_root: Path, path: str) -> Path | None:
    """The file `path` names when it is one of the API's own images, a direct child of the
    dataset's added-items folder (a link there is itself the file, never its target); None
    for anything else, which is never removed."""
    parts = PurePosixPath(path).parts
    if len(parts) != 2 or parts[0] != ITEMS_DIR or parts[1] == "..":
        return None
    folder = dataset_root / ITEMS_DIR
    if folder.is_symlink() or confined(dataset_root, ITEMS_DIR) is None:
        return None
    return folder / parts[1]


@dataclass
class Compacted:
    dropped: int = 0  # entries removed from the log
    removed: list[Path] = field(default_factory=list)  # image files removed


def compact(changes: ChangeLog, dataset: str, dataset_root: Path | None, models_root: Path,
            upto: int, also_named: Iterable[str] = ()) -> Compacted:
    """Drop the log's entries superseded up to `upto`, then the added images that only they
    named."""
    dropped = changes.compact(dataset, upto)
    done = Compacted(dropped=len(dropped))
    paths = {c.path for c in dropped if c.op == ADD and c.path}
    if dataset_root is None or not paths:
        return done
    named = named_images(changes, dataset, models_root, also_named)
    for path in sorted(paths - named):
        file = own_image(dataset_root, path)
        if file is not None:
            file.unlink(missing_ok=True)
            done.removed.append(file)
    log.info("change log of dataset %r compacted up to %d: %d entries and %d images removed",
             dataset, upto, done.dropped, len(done.removed))
    return done
