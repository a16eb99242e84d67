"""Zip archives as other archivers write them, which Python's zipfile does not: names stored
as UTF-8 bytes without the UTF-8 flag (Linux's `zip`, macOS's Archive Utility), names in the
old DOS code page, and Info-ZIP's Unicode Path extra field."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib


def zip_with_raw_names(entries: list[tuple[bytes, bytes]],
                       unicode_paths: dict[bytes, str] | None = None) -> bytes:
    """A zip whose members' stored names are exactly the given bytes, with no UTF-8 flag;
    `unicode_paths`: stored name -> the name of an Info-ZIP Unicode Path field added to it.
    Written with ASCII stand-ins of the same length, then the stand-ins' bytes replaced."""
    buf = io.BytesIO()
    stand_ins = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i, (raw, data) in enumerate(entries):
            assert len(raw) >= 4
            stand_in = ("\x7e" * (len(raw) - 4) + f"{i:04d}").encode()
            stand_ins.append((stand_in, raw))
            info = zipfile.ZipInfo(stand_in.decode())
            if unicode_paths and raw in unicode_paths:
                name = unicode_paths[raw].encode()
                info.extra = struct.pack("<HHBI", 0x7075, 5 + len(name), 1,
                                         zlib.crc32(raw)) + name
            z.writestr(info, data)
    out = buf.getvalue()
    for stand_in, raw in stand_ins:
        assert out.count(stand_in) == 2  # the local header and the central directory
        out = out.replace(stand_in, raw)
    return out
