"""The image file behind an indexed item, and its thumbnails.

An item id is a path relative to its dataset's root (after the single top folders an archive
usually has). Files are read only from inside the dataset: an id with `..`, an absolute path,
or a symlink that leads out of the dataset is not found. Datasets are folders (uploads are
extracted into one), zip archives or uncompressed tar archives; images of compressed tars and
of .npz arrays are not served (the trainer reads those through a temporary copy or as arrays).

Thumbnails are WebP (JPEG where Pillow lacks WebP), never larger than the original, and kept
in a memory cache bounded in bytes. They come in a few sizes (a few cache entries per item),
from images of at most THUMB_MAX_PIXELS (checked from the header), and at most THUMB_DECODES
of them are decoded at once per process (a decode may take ~4 bytes per pixel).
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path, PurePosixPath

from PIL import Image, ImageOps, UnidentifiedImageError, features

from trainer.collection import Collection
from trainer.data import open_collection
from trainer.errors import DatasetError
from trainer.images import RESIZED_FIRST, InvalidImage, is_clutter, open_image, to_rgb

THUMB_FORMAT = ("WEBP", "image/webp") if features.check("webp") else ("JPEG", "image/jpeg")


class ThumbSize(IntEnum):
    """Thumbnail sizes (longest side, pixels); the console asks for 96 and 128."""

    PX16 = 16
    PX32 = 32
    PX64 = 64
    PX96 = 96
    PX128 = 128
    PX256 = 256


THUMB_SIZES = tuple(int(s) for s in ThumbSize)
THUMB_MAX_PIXELS = 25_000_000  # a 24 MP photo passes: ~100 MB as an RGB PNG, ~190 as RGBA
THUMB_DECODES = min(4, os.cpu_count() or 1)


class NotServed(LookupError):
    """The item's file cannot be served; the message says why (answered 404)."""


@dataclass(frozen=True)
class ItemFile:
    """A located file: its ETag seed is known without reading it (for 304 answers)."""

    read: Callable[[], bytes]
    media_type: str
    etag_seed: str  # changes when the file changes


def safe_id(item_id: str) -> bool:
    """A relative path with no `..`, `.` or empty parts and no backslash or NUL."""
    if not item_id or len(item_id) > 4096 or "\\" in item_id or "\x00" in item_id:
        return False
    if item_id.startswith("/"):
        return False
    parts = item_id.split("/")
    return all(p not in ("", ".", "..") for p in parts) and not PurePosixPath(
        item_id).is_absolute()


class DatasetFiles:
    """Reads item files of the datasets under one data root."""

    def __init__(self, data_root: Path, archives_cached: int = 4) -> None:
        self.data_root = Path(data_root)
        self._prefix: dict[Path, Path] = {}  # dataset root -> folder that ids are relative to
        self._archives: OrderedDict[tuple[str, int, int], tuple[Collection, dict[str, int]]] = (
            OrderedDict())
        self._archives_cached = archives_cached
        self._lock = threading.Lock()

    def dataset_root(self, name: str) -> Path:
        root = self.data_root.resolve()
        path = (root / name).resolve()
        if not name or "/" in name or not path.is_relative_to(root) or path == root or (
                not path.exists()):
            raise NotServed(f"dataset {name!r} is not on this server any more")
        return path

    def locate(self, dataset: str, item_id: str) -> ItemFile:
        if not safe_id(item_id):
            raise NotServed(f"no item {item_id!r}")
        root = self.dataset_root(dataset)
        if root.is_dir():
            return self._read_folder(root, item_id)
        return self._read_archive(root, item_id)

    def locate_added(self, dataset: str, path: str, item_id: str) -> ItemFile:
        """An item added through the API: `path` is its image, relative to the dataset root."""
        root = self.dataset_root(dataset)
        file = (root / path).resolve()
        if not safe_id(path) or not file.is_relative_to(root) or not file.is_file():
            raise NotServed(f"the file of item {item_id!r} is not in dataset {root.name!r}")
        stat = file.stat()
        return ItemFile(file.read_bytes, _media_type(path),
                        f"{file}\0{stat.st_mtime_ns}\0{stat.st_size}")

    # --- folders ------------------------------------------------------------------------
    def _read_folder(self, root: Path, item_id: str) -> ItemFile:
        base = self._prefix.get(root)
        if base is None or not (base / item_id).exists():
            base = _id_base(root, item_id)
            if base is None:
                raise NotServed(f"the file of item {item_id!r} is not in dataset {root.name!r}")
            self._prefix[root] = base
        path = (base / item_id).resolve()
        # The resolved file must still be inside the dataset: a symlink out of it is refused.
        if not path.is_relative_to(root) or not path.is_file():
            raise NotServed(f"the file of item {item_id!r} is not in dataset {root.name!r}")
        stat = path.stat()
        return ItemFile(path.read_bytes, _media_type(item_id),
                        f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}")

    # --- archives -----------------------------------------------------------------------
    def _read_archive(self, archive: Path, item_id: str) -> ItemFile:
        name = archive.name.lower()
        if not (name.endswith(".zip") or name.endswith(".tar")):
            raise NotServed(f"images of dataset {archive.name!r} are not served: only folders, "
                            ".zip and uncompressed .tar datasets are")
        stat = archive.stat()
        key = (str(archive), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._archives.get(key)
            if cached is not None:
                self._archives.move_to_end(key)
        if cached is None:
            try:
                collection = open_collection(archive)
            except DatasetError as exc:
                raise NotServed(str(exc)) from None
            cached = (collection, {item: i for i, item in enumerate(collection.ids)})
            with self._lock:
                self._archives[key] = cached
                while len(self._archives) > self._archives_cached:
                    self._archives.popitem(last=False)
        collection, rows = cached
        row = rows.get(item_id)
        if row is None:
            raise NotServed(f"the file of item {item_id!r} is not in dataset {archive.name!r}")
        source = collection.source
        member = source.paths[int(collection.source_index[row])]  # type: ignore[attr-defined]
        return ItemFile(lambda: source.read(member), _media_type(item_id),  # type: ignore[attr-defined]
                        f"{key}\0{item_id}")


def _id_base(root: Path, item_id: str, depth: int = 8) -> Path | None:
    """The folder ids are relative to: the dataset root, or the single folder an archive was
    wrapped in (several levels of them), as the trainer reads it."""
    folder = root
    for _ in range(depth):
        if (folder / item_id).exists():
            return folder
        subfolders = [p for p in folder.iterdir()
                      if p.is_dir() and not is_clutter(p.name)]
        if len(subfolders) != 1:
            return None
        folder = subfolders[0]
    return None


def _media_type(item_id: str) -> str:
    guessed, _ = mimetypes.guess_type(item_id)
    return guessed if guessed and guessed.startswith("image/") else "application/octet-stream"


def etag(*parts: object) -> str:
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:32]
    return f'"{digest}"'


def thumbnail(data: bytes, size: int) -> bytes:
    """The image scaled to fit in size x size (never enlarged), as THUMB_FORMAT."""
    # The header only; a JPEG is set to decode at a reduced scale, and the limit holds for that.
    image = open_image(data, max_pixels=THUMB_MAX_PIXELS, decode_size=size)
    try:
        if image.mode in RESIZED_FIRST:
            # Shrunk before it is turned upright and converted, as trainer.images.square does:
            # a 24 MP RGBA PNG took 561 MB on its way to a thumbnail, every step a full copy.
            image.load()  # a TIFF decoder turns its image upright as it loads
            image.thumbnail((size, size), Image.Resampling.LANCZOS)  # keeps the EXIF
        image = to_rgb(ImageOps.exif_transpose(image))
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError) as exc:
        raise InvalidImage(f"the item's file is not a readable image ({type(exc).__name__})"
                           ) from None
    out = io.BytesIO()
    image.save(out, THUMB_FORMAT[0], quality=85)
    return out.getvalue()


class ThumbnailCache:
    """Encoded thumbnails by ETag, least recently used dropped first past `max_bytes`."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._bytes += len(value)
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)

    @property
    def bytes(self) -> int:
        return self._bytes
