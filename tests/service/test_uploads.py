"""Dataset uploads and registration: every archive limit is checked before the work it bounds,
links, devices and escaping names are refused, names and paths with control characters never
reach the file system, and what a crash leaves behind is swept."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import tarfile
import time
import zipfile

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.errors import PROBLEM
from tests.conftest import CIFAR_SLICE
from tests.service.conftest import ADMIN, make_settings
from tests.zips import zip_with_raw_names

AUTH = {"Authorization": f"Bearer {ADMIN}"}
MB = 1024 * 1024


def _png() -> bytes:
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        return z.read("cifar10/test/cat/0001.jpg")


IMG = _png()


def _zip(entries: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (0o120777 << 16)  # a symbolic link
            z.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _tar(members: list[tarfile.TarInfo], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for i in range(12):  # a usable dataset besides the member under test
            info = tarfile.TarInfo(f"c{i % 2}/{i}.jpg")
            info.size = len(IMG)
            tf.addfile(info, io.BytesIO(IMG))
        for member in members:
            tf.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0,
            link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


GOOD = {f"c{i % 2}/{i}.jpg": IMG for i in range(12)}


@pytest.fixture()
def make_client(tmp_path, models_template):
    def make(**overrides) -> tuple[TestClient, object]:
        settings = make_settings(tmp_path, models_template, **overrides)
        return TestClient(create_app(settings, enqueue=lambda j: None)), settings

    return make


def _upload(client, name: str, data: bytes, filename: str = "d.zip"):
    return client.post("/datasets", data={"name": name}, files={"file": (filename, data)},
                       headers=AUTH)


def _problem(r, status: int, title: str | None = None) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    if title:
        assert r.json()["title"] == title
    return r.json().get("detail", "")


def _leftovers(settings) -> list[str]:
    return [p.name for p in settings.data_root.iterdir() if p.name.startswith(".upload-")]


# --- size and entry limits --------------------------------------------------------------------

def test_the_extraction_limit_counts_every_member_images_or_not(make_client):
    client, settings = make_client(max_extracted_mb=1)
    with client:
        r = _upload(client, "big", _zip(GOOD | {"notes/big.bin": b"\0" * (2 * MB)}))
        assert "MAX_EXTRACTED_MB" in _problem(r, 413)
        r = _upload(client, "bigtar", _tar([_member("notes/big.bin", size=2 * MB)]),
                    "d.tar")
        assert "MAX_EXTRACTED_MB" in _problem(r, 413)
        r = _upload(client, "images", _zip({f"c{i % 2}/{i}.png": b"\0" * (200 * 1024)
                                            for i in range(6)}))
        _problem(r, 413)
        assert _upload(client, "fits", _zip(GOOD)).status_code == 201
    assert not (settings.data_root / "big").exists() and _leftovers(settings) == []


def _tar_gz_bomb(member_bytes: int) -> bytes:
    """A .tar.gz of a few MB whose one (non-image) member expands to `member_bytes` zeros:
    gzip members concatenate, and a tar after its header is all zeros."""
    header = _member("zeros.bin", size=member_bytes).tobuf(format=tarfile.GNU_FORMAT)
    chunk = 16 * MB
    zeros = gzip.compress(b"\0" * chunk, compresslevel=9)
    parts = [gzip.compress(header)] + [zeros] * (member_bytes // chunk)
    parts.append(gzip.compress(b"\0" * (member_bytes % chunk + 1024)))  # padding, end blocks
    return b"".join(parts)


def test_a_compressed_tar_bomb_is_refused_from_its_header(make_client):
    """A member that is skipped (not an image) still had to be decompressed to reach the next
    header: 2 GB here, from a 2 MB upload."""
    bomb = _tar_gz_bomb(2048 * MB)
    assert len(bomb) < 3 * MB
    client, settings = make_client(max_extracted_mb=64)
    with client:
        detail = _problem(_upload(client, "bomb", bomb, "b.tar.gz"), 413)
    assert "MAX_EXTRACTED_MB" in detail and _leftovers(settings) == []


def test_the_entry_limit_comes_before_reading_the_archive(make_client):
    client, _ = make_client(max_archive_entries=50)
    many = {f"c{i % 2}/{i}.jpg": IMG for i in range(60)}
    with client:
        r = _upload(client, "many", _zip(many))
        assert "MAX_ARCHIVE_ENTRIES" in _problem(r, 413)
        r = _upload(client, "manytar", _tar([_member(f"x/{i}.txt") for i in range(60)]),
                    "d.tar")
        assert "MAX_ARCHIVE_ENTRIES" in _problem(r, 413)
        # An end record that understates the entries does not get past the count.
        lying = bytearray(_zip(many))
        end = lying.rfind(b"PK\x05\x06")
        struct.pack_into("<HH", lying, end + 8, 10, 10)
        assert "MAX_ARCHIVE_ENTRIES" in _problem(_upload(client, "lying", bytes(lying)), 413)
        assert _upload(client, "few", _zip(GOOD)).status_code == 201


# --- what an archive may hold -------------------------------------------------------------------

@pytest.mark.parametrize(("case", "archive", "filename"), [
    ("zip symlink", _zip(GOOD, links=("c0/link.jpg",)), "d.zip"),
    ("tar symlink", _tar([_member("c0/s.jpg", tarfile.SYMTYPE, link="/etc/passwd")]), "d.tar"),
    ("tar hardlink", _tar([_member("c0/h.jpg", tarfile.LNKTYPE, link="c0/0.jpg")]), "d.tar"),
    ("tar char device", _tar([_member("c0/dev", tarfile.CHRTYPE)]), "d.tar"),
    ("tar block device", _tar([_member("c0/blk", tarfile.BLKTYPE)]), "d.tar"),
    ("tar fifo", _tar([_member("c0/fifo", tarfile.FIFOTYPE)]), "d.tar"),
    ("backslash climb", _zip(GOOD | {"..\\..\\evil.jpg": IMG}), "d.zip"),
    ("drive letter", _zip(GOOD | {"C:\\evil.jpg": IMG}), "d.zip"),
    ("drive relative", _zip(GOOD | {"C:evil.jpg": IMG}), "d.zip"),
    ("absolute", _zip(GOOD | {"/tmp/evil.jpg": IMG}), "d.zip"),
    ("control character", _zip(GOOD | {"c0/a\nb.jpg": IMG}), "d.zip"),
])
def test_links_devices_and_escaping_names_are_refused(make_client, case, archive, filename):
    client, settings = make_client()
    with client:
        _problem(_upload(client, "evil", archive, filename), 422, "Invalid Archive")
    assert not (settings.data_root / "evil").exists() and _leftovers(settings) == []
    assert not (settings.data_root.parent / "evil.jpg").exists()


def test_backslashes_inside_the_dataset_are_folders(make_client):
    client, settings = make_client()
    with client:
        r = _upload(client, "win", _zip({f"c{i % 2}\\{i}.jpg": IMG for i in range(12)}))
        assert r.status_code == 201, r.text
    assert (settings.data_root / "win" / "c0" / "0.jpg").is_file()


def test_utf8_names_from_archivers_that_do_not_flag_them_keep_their_letters(make_client):
    """Linux's `zip` and macOS's Archive Utility store UTF-8 names without the zip format's
    UTF-8 flag; read as the format's default code page they would become other letters."""
    client, settings = make_client()
    entries = [(f"chats-été/{i}.jpg".encode() if i % 2 else f"hünde/ñ{i}.jpg".encode(), IMG)
               for i in range(12)]
    with client:
        r = _upload(client, "accents", zip_with_raw_names(entries))
        assert r.status_code == 201, r.text
        assert r.json()["classes"] == ["chats-été", "hünde"], r.json()
    assert (settings.data_root / "accents" / "hünde" / "ñ0.jpg").is_file()


# --- disk, leftovers, names ----------------------------------------------------------------------

def test_an_upload_that_would_fill_the_disk_is_507(make_client):
    client, settings = make_client(min_free_disk_mb=10**9)
    with client:
        r = _upload(client, "full", _zip(GOOD))
        assert "MIN_FREE_DISK_MB" in _problem(r, 507, "Insufficient Storage")
    assert not (settings.data_root / "full").exists() and _leftovers(settings) == []


def test_interrupted_uploads_are_swept_at_start(tmp_path, models_template):
    settings = make_settings(tmp_path, models_template)
    old, new = settings.data_root / ".upload-old", settings.data_root / ".upload-new"
    for folder in (old, new):
        (folder / "data" / "c0").mkdir(parents=True)
        (folder / "archive").write_bytes(b"partial")
    hour_ago = time.time() - 3700
    for path in (old, old / "data", old / "data" / "c0", old / "archive"):
        os.utime(path, (hour_ago, hour_ago))
    with TestClient(create_app(settings, enqueue=lambda j: None)):
        pass
    assert not old.exists() and new.exists()


def test_a_name_with_a_trailing_newline_is_refused(make_client):
    """re.match with `$` let "abc\\n" through: the folder was created, then the Location
    header failed (500)."""
    client, settings = make_client()
    with client:
        r = _upload(client, "abc\n", _zip(GOOD))
        _problem(r, 422)
        r = client.post("/datasets", json={"name": "abc\n", "path": "x"}, headers=AUTH)
        _problem(r, 422)
        for url in ("/datasets/abc%0A", "/datasets/abc%00"):
            assert client.get(url).status_code in (404, 422)
    assert sorted(p.name for p in settings.data_root.iterdir()) in ([], [".meta"])


@pytest.mark.parametrize("path", ["fashion\x00", "a\x00b/c", "imports/\x1bx", "../models",
                                  "/etc", ".meta", "a/../../b", "a\\..\\b"])
def test_register_paths_are_checked_before_the_file_system(make_client, path):
    client, _ = make_client()
    with client:
        r = client.post("/datasets", json={"name": "fashion", "path": path}, headers=AUTH)
        _problem(r, 422)


def test_register_answers_404_and_409_for_missing_and_unusable_folders(make_client):
    client, settings = make_client()
    (settings.data_root / "empty").mkdir()
    with client:
        r = client.post("/datasets", json={"name": "x", "path": "nowhere"}, headers=AUTH)
        _problem(r, 404)
        r = client.post("/datasets", json={"name": "x", "path": "empty"}, headers=AUTH)
        _problem(r, 409, "Unusable Dataset")
    assert not (settings.data_root / "x").exists()


# --- the summary cache ---------------------------------------------------------------------------

def test_an_unreadable_summary_cache_is_rebuilt(make_client):
    client, settings = make_client()
    with client:
        assert _upload(client, "ok", _zip(GOOD)).status_code == 201
        meta = settings.data_root / ".meta" / "ok.json"
        good = meta.read_text()
        for broken in (good[: len(good) // 2], "", "[1, 2]", '{"summary": 3}'):
            meta.write_text(broken)
            r = client.get("/datasets")
            assert r.status_code == 200 and r.json()["count"] == 1, (broken, r.text)
            assert client.get("/datasets/ok").json()["items"] == 12
            assert json.loads(meta.read_text())["summary"]["items"] == 12


def test_the_summary_cache_is_replaced_whole(make_client):
    """Written in place, a reader could see it half written; replaced by rename, it never
    can: the file is a new one each time and no temporary file stays."""
    client, settings = make_client()
    with client:
        assert _upload(client, "ok", _zip(GOOD)).status_code == 201
        meta = settings.data_root / ".meta" / "ok.json"
        before = meta.stat().st_ino
        meta.write_text("{}")  # stale: rebuilt on the next read
        inode = meta.stat().st_ino
        assert client.get("/datasets/ok").status_code == 200
        assert meta.stat().st_ino not in (before, inode)
    assert sorted(p.name for p in meta.parent.iterdir()) == ["ok.json"]
