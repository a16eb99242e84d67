"""Adding and deleting items of a served model's collection.

An add is all or nothing: every image is decoded (and so checked) and embedded first, then
written into the dataset (fsynced), and only then are the request's entries appended to the
change log in one atomic step: that append is the commit. A request that fails before it
leaves no entry (its files are removed); a process killed before it leaves at most files that
no entry names; one killed after it has every item in. The answer comes after the append and
after this replica applied it to the version written through (the registry's `caught_up`: an
older version on the low-priority lane), so a write is visible at once where it was made, and
on the other replicas within MODEL_POLL_S.

Every request appends with a token of its own, so the log's retry after a lost reply finds the
request's entries instead of conflicting with them (state/changes.py). A client that sends an
Idempotency-Key names that token itself: the same request sent again after its HTTP reply was
lost then answers as the first did and changes nothing more (its images, stored again, are
named by no entry: the orphan sweep removes them). When the append fails in
a way that leaves its outcome unknown (the store unreachable), the images are kept: they may be
named by committed entries. The ones no entry names are removed later by the orphan sweep
(service/orphans.py).
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from live.items import store_image
from service.batcher import EmbedBatcher, Overloaded
from service.bodies import MAX_ERRORS
from service.decoding import QueryDecoder
from service.errors import ProblemError, conflict, insufficient_storage, invalid, not_found
from service.item_duplicates import DuplicateCheck
from service.limits import ID_MAX
from service.live_view import LiveView
from service.registry import ModelRegistry, Served
from service.schemas import LABEL, LABEL_MAX, NEW_ITEM_ID
from service.uploads import DiskFull, DiskGuard
from state.changes import ADD, DELETE, Change, ChangeConflict
from trainer.images import InvalidImage

log = logging.getLogger(__name__)
EMBED_CHUNK = 256  # images embedded per batcher request
# An archive's images are read from disk, decoded and embedded this many bytes at a time (or
# EMBED_CHUNK images, whichever comes first): a request holds one chunk, not the archive.
CHUNK_BYTES = 64 * 1024 * 1024
_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif",
           "TIFF": ".tif"}


@dataclass
class NewItem:
    id: str
    data: bytes | Path  # the image, or the file holding it (an archive's entry on disk)
    label: str | None = None

    def read(self) -> bytes:
        return self.data.read_bytes() if isinstance(self.data, Path) else self.data

    def size(self) -> int:
        return self.data.stat().st_size if isinstance(self.data, Path) else len(self.data)


def is_new_id(item: str) -> bool:
    return (len(item) <= ID_MAX and re.fullmatch(NEW_ITEM_ID, item) is not None
            and _is_nfc(item))


def _is_nfc(item: str) -> bool:
    """In Unicode NFC (one spelling per name: "é" is U+00E9, not e + U+0301), and UTF-8 (no
    lone surrogates)."""
    try:
        item.encode()
    except UnicodeEncodeError:
        return False
    return unicodedata.is_normalized("NFC", item)


def check_id(item: str) -> str:
    """An id is a relative path: no empty, `.` or `..` parts, no leading slash, no backslash,
    no control or invisible characters (categories Cc, Cf, Zl, Zp), in NFC."""
    if not is_new_id(item):
        if re.fullmatch(NEW_ITEM_ID, item) is not None and not _is_nfc(item):
            raise ProblemError(422, "Invalid Id", f"id {item!r}: not in Unicode NFC; send "
                               "the same name normalised (NFC)")
        raise invalid(f"id {item!r}: must be a relative path without empty, '.' or '..' "
                      "parts, backslashes, or control or invisible characters")
    return item


def check_label(label: str | None) -> str | None:
    if label is not None and not re.fullmatch(LABEL, label):
        raise invalid(f"label {label!r}: 1 to {LABEL_MAX} characters, no control characters")
    return label


def writable_view(served: Served) -> LiveView:
    view = served.live
    if not view.writable:
        raise conflict(f"model {served.version}'s dataset {view.dataset!r} is not a folder on "
                       "this server: items can be added to and deleted from folder datasets "
                       "(uploads are folders) only")
    return view


async def add_items(registry: ModelRegistry, served: Served, items: list[NewItem],
                    upsert: bool, decoder: QueryDecoder, batcher: EmbedBatcher, *,
                    reserve: int, key: str | None = None,
                    duplicates: DuplicateCheck | None = None) -> list[Change]:
    """Embed, store and append `items`, all or nothing; `reserve`: the free disk (bytes) that
    storing their images must leave (MIN_FREE_DISK_MB), else 507; `key`: the request's
    Idempotency-Key, if it sent one; `duplicates`: finds the existing items each image
    duplicates, before anything is stored (and refuses them, if it is told to)."""
    view = writable_view(served)
    seen: set[str] = set()
    for item in items:
        check_id(item.id)
        check_label(item.label)
        if item.id in seen:
            raise conflict(f"id {item.id!r} appears twice in this request; nothing was added")
        seen.add(item.id)
    model = served.bundle.model
    size = model.meta.image_size
    vectors = []
    chunks = _chunks(items)
    for n, chunk in enumerate(chunks):
        data = await run_in_threadpool(_read, chunk)
        try:
            images = await decoder.decode(data, size)
        except InvalidImage:
            # Every unreadable item in one answer, so that a large archive is not sent again
            # once per bad file: the rest is only decoded, not embedded.
            bad = await _unreadable(decoder, chunk, data, size)
            for rest in chunks[n + 1:]:
                bad += await _unreadable(decoder, rest, await run_in_threadpool(_read, rest),
                                         size)
            if not bad:
                raise
            raise _refused(bad, len(items)) from None
        del data
        try:
            vectors.append(await batcher.embed(model, images))
        except Overloaded as exc:
            raise ProblemError(503, "Service Unavailable", str(exc),
                               headers={"Retry-After": "1"}) from None
    embedded = np.concatenate(vectors)
    if duplicates is not None:
        await run_in_threadpool(duplicates.run, view.index, [i.id for i in items], embedded)
    changes = await run_in_threadpool(_commit, view, served.version, items, embedded, upsert,
                                      request_token(key), reserve)
    await registry.caught_up(served)
    return changes


def _read(items: list[NewItem]) -> list[bytes]:
    return [item.read() for item in items]


def _chunks(items: list[NewItem]) -> list[list[NewItem]]:
    """Consecutive runs of at most EMBED_CHUNK items and CHUNK_BYTES (at least one item)."""
    chunks: list[list[NewItem]] = [[]]
    held = 0
    for item in items:
        size = item.size()
        if chunks[-1] and (len(chunks[-1]) >= EMBED_CHUNK or held + size > CHUNK_BYTES):
            chunks.append([])
            held = 0
        chunks[-1].append(item)
        held += size
    return [c for c in chunks if c]


async def _unreadable(decoder: QueryDecoder, chunk: list[NewItem], data: list[bytes],
                      size: int) -> list[dict[str, str]]:
    """The items of `chunk` whose image does not decode (one by one, to name each), and why."""
    bad = []
    for item, one in zip(chunk, data, strict=True):
        try:
            await decoder.decode([one], size)
        except InvalidImage as exc:
            why = str(exc).removeprefix("image 0: ").removeprefix("image 0 ")
            bad.append({"item": item.id, "detail": why})
    return bad


def _refused(bad: list[dict[str, str]], total: int) -> ProblemError:
    """422 naming the first unreadable item, and listing them (at most MAX_ERRORS)."""
    first = f"item {bad[0]['item']!r}: {bad[0]['detail']}"
    if len(bad) > 1:
        first = f"{len(bad)} of the {total} images are not readable (listed in errors); {first}"
    return ProblemError(422, "Invalid Image", f"{first}; nothing was added",
                        errors=bad[:MAX_ERRORS], error_count=len(bad))


def request_token(key: str | None = None) -> str:
    """The token of one HTTP request's append (state/changes.py): the client's Idempotency-Key
    when it sent one (prefixed, so that it never meets a generated token), else a new one."""
    return f"key:{key}" if key else uuid.uuid4().hex


def _commit(view: LiveView, version: str, items: list[NewItem], vectors: np.ndarray,
            upsert: bool, token: str, reserve: int) -> list[Change]:
    assert view.dataset_root is not None and view.changes is not None
    stored: list[Path] = []
    disk = DiskGuard(view.dataset_root, reserve)
    try:
        changes = []
        for item, vector in zip(items, vectors, strict=True):
            data = item.read()
            try:
                disk.need(len(data))
            except DiskFull as exc:
                raise insufficient_storage(f"{exc}; nothing was added") from None
            path = store_image(view.dataset_root, data, _suffix(data))
            stored.append(view.dataset_root / path)
            changes.append(Change(ADD, item.id, label=item.label, path=path, vector=vector,
                                  version=version))
        known = {item.id: item.id in view.index for item in items}
    except BaseException:
        _remove(stored)  # nothing was appended
        raise
    try:
        view.changes.append(view.dataset, changes, known, upsert=upsert, token=token)
    except ChangeConflict as exc:
        _remove(stored)  # refused: nothing was appended
        raise conflict(f"item {exc.item!r} already exists in dataset {view.dataset!r}; send "
                       "upsert=true to replace it; nothing was added") from None
    except BaseException:
        # The entries may be in the log all the same: their images stay (the orphan sweep
        # removes those no entry names).
        log.warning("adding %d items to %r failed with an unknown outcome; their images are "
                    "kept", len(changes), view.dataset)
        raise
    return changes


async def delete_items(registry: ModelRegistry, served: Served, ids: list[str],
                       key: str | None = None) -> list[Change]:
    """Delete `ids` (all or none: 404 when one is not in the collection); `key`: the request's
    Idempotency-Key, if it sent one."""
    view = writable_view(served)
    for item in ids:
        check_id(item)
    changes = await run_in_threadpool(_delete, view, ids, key)
    await registry.caught_up(served)
    return changes


def _delete(view: LiveView, ids: list[str], key: str | None) -> list[Change]:
    assert view.changes is not None
    known = {item: item in view.index for item in ids}
    try:
        return view.changes.append(view.dataset, [Change(DELETE, i) for i in
                                                  dict.fromkeys(ids)], known,
                                   token=request_token(key))
    except ChangeConflict as exc:
        raise not_found(f"no item {exc.item!r} in dataset {view.dataset!r}; nothing was "
                        "deleted") from None


def _suffix(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _SUFFIX.get(image.format or "", ".img")
    except (UnidentifiedImageError, OSError):
        return ".img"


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
