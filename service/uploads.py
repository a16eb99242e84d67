"""Dataset uploads: streamed to disk, then checked and unpacked into DATA_ROOT/<name>.

Refused: entries that would land outside the target folder (absolute paths, `..`), links and
devices, archives that expand past the size or entry limits, files that are not archives.
Reported: entries that are not images (left out of the dataset).
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from trainer.images import is_image_name


class UploadRejected(ValueError):
    pass


@dataclass
class Extracted:
    images: int = 0
    ignored: list[str] = field(default_factory=list)


def _safe_relative(name: str) -> str:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or name.startswith(("/", "\\")) or (
            len(name) > 1 and name[1] == ":"):
        raise UploadRejected(f"archive entry {name!r} would be written outside the dataset")
    rel = posix.as_posix()
    return "" if rel == "." else rel


def _wanted(rel: str, result: Extracted) -> bool:
    """Images are kept; other files and system clutter (__MACOSX, dot files) are reported."""
    if any(part.startswith((".", "__MACOSX")) for part in rel.split("/")) or not (
            is_image_name(rel)):
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
    except (tarfile.TarError, OSError):
        pass
    raise UploadRejected("the file is not a zip or tar archive")


def extract(archive: Path, target: Path, max_bytes: int, max_entries: int) -> Extracted:
    """Unpack image entries of `archive` into `target` (which must not exist)."""
    target.mkdir(parents=True)
    result = Extracted()
    total = 0
    kind = kind_of(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                if len(infos) > max_entries:
                    raise UploadRejected(f"archive holds {len(infos)} entries; the limit is "
                                         f"{max_entries}")
                for info in infos:
                    mode = info.external_attr >> 16
                    if stat.S_ISLNK(mode):
                        raise UploadRejected(f"archive entry {info.filename!r} is a link")
                    rel = _safe_relative(info.filename)
                    if info.is_dir() or not rel or not _wanted(rel, result):
                        continue
                    total += info.file_size
                    if total > max_bytes:
                        raise UploadRejected(f"archive expands past {max_bytes} bytes")
                    dest = target / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    result.images += 1
        else:
            with tarfile.open(archive) as tf:
                count = 0
                for member in tf:
                    count += 1
                    if count > max_entries:
                        raise UploadRejected(f"archive holds more than {max_entries} entries")
                    rel = _safe_relative(member.name)
                    if member.issym() or member.islnk():
                        raise UploadRejected(f"archive entry {member.name!r} is a link")
                    if member.isdir() or not rel:
                        continue
                    if not member.isfile():
                        raise UploadRejected(f"archive entry {member.name!r} is not a file")
                    if not _wanted(rel, result):
                        continue
                    total += member.size
                    if total > max_bytes:
                        raise UploadRejected(f"archive expands past {max_bytes} bytes")
                    src = tf.extractfile(member)
                    if src is None:
                        continue
                    dest = target / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    result.images += 1
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise UploadRejected(f"the archive is damaged: {exc}") from exc
    if result.images == 0:
        raise UploadRejected("the archive holds no images (JPEG, PNG, WebP, BMP, GIF or TIFF)")
    return result


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def disk_free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
