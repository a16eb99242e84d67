"""Where a collection's images are read from: a folder, a zip or an uncompressed tar (members
read in place), or arrays. Every source is usable from forked processes."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from trainer.images import InvalidImage, array_to_square, decode_square


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
