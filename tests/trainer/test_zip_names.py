"""Member names of zips written by other archivers come out as their authors wrote them
(trainer.archives.zip_member_name), in datasets opened in place and in the ids they give."""

from __future__ import annotations

import io
import zipfile

from tests.zips import zip_with_raw_names
from trainer.archives import open_zip, zip_member_name


def _names(data: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [zip_member_name(i) for i in z.infolist()]


def test_utf8_names_without_the_flag_are_read_as_utf8():
    data = zip_with_raw_names([("chats-été/ünï 1.png".encode(), b"a"),
                               (b"plain/ascii.png", b"b")])
    with zipfile.ZipFile(io.BytesIO(data)) as z:  # what Python alone makes of them
        assert z.namelist()[0] == "chats-été/ünï 1.png".encode().decode("cp437")
    assert _names(data) == ["chats-été/ünï 1.png", "plain/ascii.png"]


def test_dos_code_page_names_stay_cp437():
    # 0x81 is "ü" in cp437 and no valid UTF-8 on its own.
    assert _names(zip_with_raw_names([(b"\x81ber/a.png", b"a")])) == ["über/a.png"]


def test_the_flagged_names_python_writes_are_unchanged():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ünï/a.png", b"a")
    assert _names(buf.getvalue()) == ["ünï/a.png"]


def test_a_unicode_path_field_names_the_member_when_it_matches_the_stored_name():
    data = zip_with_raw_names([(b"?n?/a.png", b"a"), (b"x?/b.png", b"b")],
                              unicode_paths={b"?n?/a.png": "ünï/a.png"})
    assert _names(data) == ["ünï/a.png", "x?/b.png"]
    # A field left over from a renamed member (its checksum is of another name) is ignored.
    stale = zip_with_raw_names([(b"plain.png", b"a")], unicode_paths={b"plain.png": "x.png"})
    with zipfile.ZipFile(io.BytesIO(stale)) as z:
        info = z.infolist()[0]
    info.orig_filename = info.filename = "other.png"
    assert zip_member_name(info) == "other.png"


def test_a_dataset_opened_in_place_has_the_written_names_and_reads_them(tmp_path):
    archive = tmp_path / "d.zip"
    archive.write_bytes(zip_with_raw_names([("été/ünï.png".encode(), b"first"),
                                            ("été/b.png".encode(), b"second")]))
    ids, source = open_zip(archive)
    assert ids == ["été/b.png", "été/ünï.png"]
    assert source.read("été/ünï.png") == b"first"
