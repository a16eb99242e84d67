"""Atomic, durable files: written under a temporary name, flushed and fsynced, renamed into
place, then the folder fsynced, so neither a crash nor a power loss mid-write leaves anything
but the previous version or the new one, whole."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)  # the rename itself is durable only once its folder is


def fsync_file(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the entries of a folder (files created, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_file(path) as f:
        f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    with atomic_file(path) as f:
        torch.save(state, f)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    # Our own files hold numpy arrays and RNG states besides tensors: not weights-only.
    return torch.load(path, map_location="cpu", weights_only=False)
