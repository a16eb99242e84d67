"""Dataset uploads: streamed to disk, then checked and unpacked into DATA_ROOT/<name>.

Refused: entries that would land outside the target folder (absolute paths, `..`, drive
letters, backslashes that climb), links and devices, archives with more than the entry limit
or that expand past the size limit, files that are not archives. Every limit is checked before
the work it bounds: a zip's entry count from its end record and a bounded walk of its central
directory, before the directory is read whole; every member's declared size (images or not)
before its data is read or skipped, since skipping a member of a compressed tar means
decompressing it; free disk before each write (DiskGuard). Reported: entries that are not
images (left out of the dataset).
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from trainer.archives import member_path, zip_member_name
from trainer.images import is_clutter, is_image_name, no_images

UPLOAD_PREFIX = ".upload-"
STALE_UPLOAD_S = 3600
_EOCD = struct.Struct("<4s4H2LH")          # end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # central directory file header
_EOCD_SEARCH = _EOCD.size + 65535           # the record ends with a comment of < 64 KiB


class UploadRejected(ValueError):
    pass


class TooLarge(UploadRejected):
    pass


class DiskFull(Exception):
    pass


@dataclass
class Extracted:
    images: int = 0
    ignored: list[str] = field(default_factory=list)


class DiskGuard:
    """Refuses a write that would leave less than `reserve` bytes free where `path` lives.
    statvfs is cheap but not free: it is asked again after every 64 MiB or 1,000 files."""

    EVERY_BYTES = 64 * 1024 * 1024
    EVERY_FILES = 1000

    def __init__(self, path: Path, reserve: int) -> None:
        self.path, self.reserve = path, reserve
        self._free = disk_free(path)
        self._since_bytes = self._since_files = 0

    def need(self, n: int) -> None:
        if (self._since_bytes + n >= self.EVERY_BYTES
                or self._since_files >= self.EVERY_FILES):
            self._free = disk_free(self.path)
            self._since_bytes = self._since_files = 0
        self._since_bytes += n
        self._since_files += 1
        if self._free - self._since_bytes < self.reserve:
            raise DiskFull(f"not enough free disk: writing {n} more bytes would leave less "
                           f"than MIN_FREE_DISK_MB ({self.reserve // (1024 * 1024)} MB)")


def _safe_relative(name: str) -> str:
    rel = member_path(name)
    if rel is None:
        raise UploadRejected(f"archive entry {name!r} would be written outside the dataset")
    return rel


def _wanted(rel: str, result: Extracted) -> bool:
    """Images are kept; other files and system clutter (__MACOSX, dot files) are reported."""
    if is_clutter(rel) or not is_image_name(rel):
        result.ignored.append(rel)
        return False
    return True


def kind_of(path: Path) -> str:
    """zip or tar, by content (the file name is the client's and proves nothing)."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        with tarfile.open(path):
            return "tar"
    except (tarfile.TarError, OSError, EOFError):
        pass
    raise UploadRejected("the file is not a zip or tar archive")


def zip_entry_count(path: Path, limit: int) -> int:
    """Entries of a zip, counted from its end record and then header by header through the
    central directory (which the record may understate), stopping past `limit`."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - _EOCD_SEARCH)
        f.seek(start)
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + _EOCD.size > len(tail):
            raise UploadRejected("the zip archive has no end record")
        _, _, _, _, declared, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, at)
        eocd_at = start + at
        if 0xFFFF in (declared,) or 0xFFFFFFFF in (cd_size, cd_offset):
            locator_at = at - _ZIP64_LOCATOR.size
            if locator_at < 0:
                raise UploadRejected("the zip64 archive has no locator")
            sig, _, record_at, _ = _ZIP64_LOCATOR.unpack_from(tail, locator_at)
            if sig != b"PK\x06\x07":
                raise UploadRejected("the zip64 archive has no locator")
            f.seek(record_at)
            record = f.read(_ZIP64_EOCD.size)
            if len(record) < _ZIP64_EOCD.size or record[:4] != b"PK\x06\x06":
                raise UploadRejected("the zip64 end record is damaged")
            fields = _ZIP64_EOCD.unpack(record)
            declared, cd_size, cd_offset = fields[6], fields[7], fields[8]
            eocd_at = locator_at + start - _ZIP64_EOCD.size
        if declared > limit:
            raise TooLarge(f"archive holds {declared} entries; the limit is {limit} "
                           "(MAX_ARCHIVE_ENTRIES)")
        # Data prepended to the archive shifts every offset: find the directory from the end.
        cd_start = eocd_at - cd_size
        if cd_start < 0:
            raise UploadRejected("the zip archive's central directory is damaged")
        f.seek(cd_start)
        reader = f
        count = 0
        while True:
            header = reader.read(_CENTRAL.size)
            if len(header) < 4 or header[:4] != b"PK\x01\x02":
                return count
            if len(header) < _CENTRAL.size:
                raise UploadRejected("the zip archive's central directory is damaged")
            count += 1
            if count > limit:
                raise TooLarge(f"archive holds more than {limit} entries (MAX_ARCHIVE_ENTRIES)")
            parts = _CENTRAL.unpack(header)
            name_len, extra_len, comment_len = parts[12], parts[13], parts[14]
            reader.seek(name_len + extra_len + comment_len, os.SEEK_CUR)


def _copy(src: IO[bytes], dest: Path, declared: int) -> None:
    """Copy at most `declared` bytes: an entry that yields more than it declared is refused."""
    with open(dest, "wb") as out:
        left = declared
        while True:
            chunk = src.read(min(1 << 20, left + 1))
            if not chunk:
                return
            left -= len(chunk)
            if left < 0:
                raise UploadRejected(f"archive entry {dest.name!r} is larger than it declares")
            out.write(chunk)


@dataclass(frozen=True)
class SizeLimits:
    """What an archive may expand to: `total` bytes (every member), each image at most
    `image` bytes (None: only the total); the names of the settings, for the answer."""

    total: int
    total_name: str = "MAX_EXTRACTED_MB"
    image: int | None = None
    image_name: str = "MAX_IMAGE_MB"


def extract(archive: Path, target: Path, max_bytes: int | SizeLimits, max_entries: int,
            disk: DiskGuard) -> Extracted:
    """Unpack image entries of `archive` into `target` (which must not exist)."""
    target.mkdir(parents=True)
    kind = kind_of(archive)
    limits = max_bytes if isinstance(max_bytes, SizeLimits) else SizeLimits(max_bytes)
    try:
        if kind == "zip":
            return _extract_zip(archive, target, limits, max_entries, disk)
        return _extract_tar(archive, target, limits, max_entries, disk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError,
            OSError, struct.error, ValueError) as exc:
        if isinstance(exc, UploadRejected):
            raise
        raise UploadRejected(f"the archive is damaged: {exc}") from exc


def _too_big(total: int, limits: SizeLimits) -> None:
    if total > limits.total:
        raise TooLarge(f"archive expands past {limits.total} bytes ({limits.total_name})")


def _image_too_big(rel: str, size: int, limits: SizeLimits) -> None:
    """Checked from the declared size, before the entry's data is read."""
    if limits.image is not None and size > limits.image:
        raise TooLarge(f"archive entry {rel!r} is larger than {limits.image} bytes "
                       f"({limits.image_name})")


def _extract_zip(archive: Path, target: Path, limits: SizeLimits, max_entries: int,
                 disk: DiskGuard) -> Extracted:
    zip_entry_count(archive, max_entries)
    result, total = Extracted(), 0
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            # Unix modes (with the file type) travel in the upper half of external_attr.
            kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
            name = zip_member_name(info)
            if kind == stat.S_IFLNK:
                raise UploadRejected(f"archive entry {name!r} is a link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UploadRejected(f"archive entry {name!r} is not a file")
            rel = _safe_relative(name)
            total += info.file_size  # every entry counts, image or not
            _too_big(total, limits)
            if info.is_dir() or not rel or not _wanted(rel, result):
                continue
            _image_too_big(rel, info.file_size, limits)
            dest = target / rel
            disk.need(info.file_size)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src:
                _copy(src, dest, info.file_size)
            result.images += 1
    return result


def _extract_tar(archive: Path, target: Path, limits: SizeLimits, max_entries: int,
                 disk: DiskGuard) -> Extracted:
    result, total, count = Extracted(), 0, 0
    with tarfile.open(archive) as tf:
        # Headers are read one at a time; moving to the next one reads past (and, compressed,
        # decompresses) this member's data, so its size is checked before the loop goes on.
        for member in tf:
            count += 1
            if count > max_entries:
                raise TooLarge(f"archive holds more than {max_entries} entries "
                               "(MAX_ARCHIVE_ENTRIES)")
            rel = _safe_relative(member.name)
            if member.issym() or member.islnk():
                raise UploadRejected(f"archive entry {member.name!r} is a link")
            if member.isdev():
                raise UploadRejected(f"archive entry {member.name!r} is a device")
            total += member.size
            _too_big(total, limits)
            if member.isdir() or not rel:
                continue
            if not member.isfile():
                raise UploadRejected(f"archive entry {member.name!r} is not a file")
            if not _wanted(rel, result):
                continue
            _image_too_big(rel, member.size, limits)
            src = tf.extractfile(member)
            if src is None:
                continue
            dest = target / rel
            disk.need(member.size)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with src:
                _copy(src, dest, member.size)
            result.images += 1
    return result


def check_images(result: Extracted) -> None:
    if result.images == 0:
        raise UploadRejected(no_images("the archive", result.ignored))


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def disk_free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def sweep_stale_uploads(data_root: Path, older_than_s: float = STALE_UPLOAD_S) -> list[str]:
    """Remove the work folders of uploads interrupted by a crash (an upload in progress
    touches its folder far more often than this)."""
    removed: list[str] = []
    if not data_root.is_dir():
        return removed
    now = time.time()
    for entry in data_root.iterdir():
        if not entry.name.startswith(UPLOAD_PREFIX):
            continue
        try:
            age = now - _last_change(entry)
        except FileNotFoundError:
            continue
        if age > older_than_s:
            remove_tree(entry)
            removed.append(entry.name)
    return removed


def _last_change(folder: Path) -> float:
    """Newest mtime of a work folder, its archive and the folders under it: a file written
    anywhere in it (another replica's upload in progress) shows in one of them."""
    if folder.is_symlink() or not folder.is_dir():
        return folder.lstat().st_mtime
    newest = folder.lstat().st_mtime
    archive = folder / "archive"
    if archive.exists():
        newest = max(newest, archive.stat().st_mtime)
    for parent, _, _ in os.walk(folder):
        newest = max(newest, os.stat(parent).st_mtime)
    return newest
