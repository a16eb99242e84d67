"""Zip and tar archives as datasets, and the rule for which of their members are safe.

A zip's members, and an uncompressed tar's, are read in place. A compressed tar has no random
access, and merely listing it decompresses all of it. So its images are extracted once, into a
hidden folder beside the archive (or in `work_dir`), named after the archive's size and mtime
(a replaced archive is extracted again and the old extraction removed), with the list of every
member. Every later open (each training job, each dataset summary) reads that folder and its
list instead. The extraction is written under a temporary name and renamed into place, under a
lock: concurrent openers wait for one extraction and never see half of one.
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
from pathlib import Path, PurePosixPath

from trainer.errors import DatasetError
from trainer.images import is_image_name
from trainer.sources import FolderSource, PathSource, TarSource, ZipSource

_LISTING = ".members.json"


def member_path(name: str) -> str | None:
    """An archive member's path relative to the archive's root ("" for the root itself), or
    None when it could land outside that root or is no plain path: absolute, climbing with
    `..`, a drive letter, backslashes read as separators, control characters. Uploads
    (service.uploads) and datasets opened from archives follow this one rule."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if (posix.is_absolute() or ".." in posix.parts or (len(name) > 1 and name[1] == ":")
            or any(ord(c) < 32 or c == "\x7f" for c in name)):
        return None
    rel = posix.as_posix()
    return "" if rel == "." else rel


_UNICODE_PATH = 0x7075  # Info-ZIP's Unicode Path extra field


def zip_member_name(info: zipfile.ZipInfo) -> str:
    """A zip member's name as its author wrote it. Python reads a name without the UTF-8 flag
    as cp437, but Linux's `zip` and macOS's Archive Utility write UTF-8 without setting it:
    "ünï/a.png" would come out as "├╝n├»/a.png". So, without the flag: the name of an Info-ZIP
    Unicode Path field that matches the stored name, else the stored bytes as UTF-8 where they
    are valid UTF-8, else cp437 as the zip format says."""
    if info.flag_bits & 0x800:
        return info.filename
    raw = info.orig_filename.encode("cp437")
    extra = info.extra
    while len(extra) >= 4:
        kind, size = int.from_bytes(extra[:2], "little"), int.from_bytes(extra[2:4], "little")
        field, extra = extra[4:4 + size], extra[4 + size:]
        if (kind == _UNICODE_PATH and len(field) > 5 and field[0] == 1
                and int.from_bytes(field[1:5], "little") == zlib.crc32(raw)):
            try:
                return field[5:].decode("utf-8")
            except UnicodeDecodeError:
                break
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return info.filename


def open_zip(path: Path) -> tuple[list[str], PathSource]:
    """(every safe member's path, sorted; the source reading them in place)."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = [(zip_member_name(i), i.filename) for i in zf.infolist()
                       if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path.name}: not a readable zip archive ({exc})") from exc
    safe = {rel: m for name, m in members if (rel := member_path(name))}
    return sorted(safe), ZipSource(str(path), safe)


def open_tar(path: Path, work_dir: str | None) -> tuple[list[str], PathSource]:
    """(every safe member's path, sorted; the source reading them)."""
    if path.suffix.lower() != ".tar":
        return _open_compressed_tar(path, work_dir)
    try:
        tf = tarfile.open(path)  # noqa: SIM115 - closed below, after the members are read
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(f"{path.name}: not a readable tar archive ({exc})") from exc
    with tf:
        members = [m for m in tf.getmembers() if m.isfile()]  # links are never followed
        safe = {s: m for m in members if (s := member_path(m.name))}
        # Uncompressed: read members in place by offset, from any process.
        offsets = {rel: (m.offset_data, m.size) for rel, m in safe.items()}
    return sorted(offsets), TarSource(str(path), offsets)


def _open_compressed_tar(path: Path, work_dir: str | None) -> tuple[list[str], PathSource]:
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
    return listing, FolderSource(str(target))


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
                rel = member_path(member.name) if member.isfile() else None  # no links
                if not rel:
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
