"""Removing what interrupted publishes left in the models folder: `.tmp-*` bundle folders and
temporary CURRENT and PREVIOUS files (beside the bundles, and in each collection's folder).
Kept free of torch and FAISS, so that a worker's supervising process and the API can call it
cheaply."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

TMP_PREFIX = ".tmp-"  # a bundle being written (or withdrawn) lives under this prefix
CURRENT = "CURRENT"
PREVIOUS = "PREVIOUS"  # the version CURRENT named before its last move: one-step rollback
COLLECTIONS = "collections"  # one folder per collection, holding its pointers (trainer/current.py)
LEFTOVER_AGE_S = 3600  # a temporary folder older than this belongs to no running publish


def sweep_leftovers(models_root: str | os.PathLike[str],
                    older_than_s: float = LEFTOVER_AGE_S) -> list[str]:
    """Remove `.tmp-*` folders and temporary CURRENT files older than `older_than_s`; returns
    the names removed. Safe while other processes publish: theirs are younger."""
    root = Path(models_root)
    if not root.is_dir():
        return []
    cutoff = time.time() - older_than_s
    removed = []
    folders = [root] + ([p for p in (root / COLLECTIONS).iterdir() if p.is_dir()]
                        if (root / COLLECTIONS).is_dir() else [])
    for path in (path for folder in folders for path in folder.iterdir()):
        leftover = (path.name.startswith(TMP_PREFIX) and path.is_dir()) or (
            path.name.startswith((f".{CURRENT}.", f".{PREVIOUS}.")) and path.name.endswith(".tmp"))
        try:
            if not leftover or path.is_symlink() or path.lstat().st_mtime >= cutoff:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:  # another process swept it first
            continue
        removed.append(str(path.relative_to(root)))
    return removed
