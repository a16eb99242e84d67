"""The live collection's operations (add, get, delete, list items; their images), each written
once as a plan (core.py) that Client and AsyncClient run.

Every change is sent with an Idempotency-Key of its own (the same on each try of it), so a
change whose reply was lost is sent again safely: the API answers as it did the first time
and changes nothing more."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from service.client.core import (
    Call,
    Core,
    Emit,
    FilePart,
    Plan,
    Stream,
    Upload,
    archived,
    batches,
    params,
    part,
    path,
    uploads,
)
from service.client.plans import current_version, pages
from service.client.results import Item, ItemDetail, ItemsChanged


def _change(method: str, url: str, query: dict[str, str], *,
            data: Mapping[str, str | list[str]] | None = None, files: list[FilePart] | None = None,
            json: object = None) -> Call:
    return Call(method, url, params=query, json=json, data=data, files=files,
                headers={"Idempotency-Key": uuid.uuid4().hex}, admin=True, replayable=True)


def add_items(core: Core, images: Upload | Sequence[Upload], *, prefix: str | None = None,
              ids: Sequence[str] | None = None, label: str | None = None,
              labels: Sequence[str] | None = None, upsert: bool = False,
              model_version: str | None = None) -> Plan[ItemsChanged]:
    """Add images (paths, or bytes with `ids`) to the served collection. Their ids are `ids`
    (one per image) or `prefix` + each file's name; `label` for all or `labels`, one per
    image. `upsert`: replace items that exist instead of refusing (409). Sent `batch` images
    per request, each request all or nothing; the answer covers them all."""
    done = yield from _add(core, images, prefix, ids, label, labels, upsert, model_version)
    return ItemsChanged(done[-1].model_version, done[-1].dataset,
                        [i for d in done for i in d.ids], done[-1].seq,
                        done[-1].duplicate_threshold, [f for d in done for f in d.duplicates])


def add_batches(core: Core, images: Upload | Sequence[Upload], *, prefix: str | None = None,
                ids: Sequence[str] | None = None, label: str | None = None,
                labels: Sequence[str] | None = None, upsert: bool = False,
                model_version: str | None = None) -> Stream[ItemsChanged]:
    """As add_items, an iterator of each request's answer as it comes."""
    return Stream(_add(core, images, prefix, ids, label, labels, upsert, model_version))


def _add(core: Core, images: Upload | Sequence[Upload], prefix: str | None,
         ids: Sequence[str] | None, label: str | None, labels: Sequence[str] | None,
         upsert: bool, model_version: str | None) -> Plan[list[ItemsChanged]]:
    files = uploads(images)
    for name, given in (("ids", ids), ("labels", labels)):
        if given is not None and len(given) != len(files):
            raise ValueError(f"{len(files)} images but {len(given)} {name}")
    if ids is None and any(isinstance(f, bytes) for f in files):
        raise ValueError("images given as bytes have no file name: give their ids")
    done: list[ItemsChanged] = []
    for batch in batches(len(files), core.batch):
        fields: dict[str, str | list[str]] = {"prefix": prefix} if prefix is not None else {}
        fields |= {"ids": [ids[i] for i in batch]} if ids is not None else {}
        fields |= {"label": label} if label is not None else {}
        if labels is not None:
            fields["labels"] = [labels[i] for i in batch]
        call = _change("POST", "/items", params(upsert=upsert or None,
                                                model_version=model_version),
                       data=fields, files=[part("files", files[i]) for i in batch])
        done.append(ItemsChanged.of((yield from core.json(call))))
        model_version = done[-1].model_version  # the later batches go to the same model
        yield Emit(done[-1])
    return done


def add_archive(core: Core, archive: Upload, *, prefix: str = "", label: str | None = None,
                upsert: bool = False, model_version: str | None = None) -> Plan[ItemsChanged]:
    """Add the images of an archive (zip or tar; a path or its bytes), or of a folder (sent as
    a zip of its files), in one request, all or nothing; their ids are `prefix` + each entry's
    path (in a folder: the path below it)."""
    fields = {"prefix": prefix} | ({"label": label} if label is not None else {})
    call = _change("POST", "/items", params(upsert=upsert or None, model_version=model_version),
                   data=fields, files=[part("archive", archived(archive), "items.zip")])
    return ItemsChanged.of((yield from core.json(call)))


def item(core: Core, item_id: str, model_version: str | None = None) -> Plan[ItemDetail]:
    """An item of the served collection: label, model, when it was added."""
    call = Call("GET", path("items", item_id), params=params(model_version=model_version),
                replayable=True)
    return ItemDetail.of((yield from core.json(call)))


def delete_items(core: Core, ids: str | Sequence[str],
                 model_version: str | None = None) -> Plan[ItemsChanged]:
    """Delete items: all of them, or none when one is missing (ApiError 404)."""
    listed = [ids] if isinstance(ids, str) else list(ids)
    call = _change("DELETE", "/items", params(model_version=model_version),
                   json={"ids": listed})
    return ItemsChanged.of((yield from core.json(call)))


def items(core: Core, model_version: str | None = None, *, label: str | None = None,
          prefix: str | None = None, page_size: int = 1000) -> Stream[Item]:
    """Every indexed item (id and label) of a model (the current one when not given, pinned
    for the whole listing), or those of a class or whose id starts with `prefix`, in index
    order, fetched `page_size` at a time (at most 10,000): an iterator. Items added or deleted
    while it runs may shift the pages (one seen twice, or missed)."""
    return Stream(_items(core, model_version, label, prefix, page_size))


def _items(core: Core, model_version: str | None, label: str | None, prefix: str | None,
           page_size: int) -> Plan[None]:
    version = yield from current_version(core, model_version)
    yield from pages(core, path("models", version, "items"), Item.of, page_size,
                      label=label, prefix=prefix)


def image(core: Core, item_id: str, model_version: str | None = None) -> Plan[bytes]:
    """The image file of an indexed item, as stored in its dataset."""
    version = yield from current_version(core, model_version)
    call = Call("GET", path("models", version, "images", item_id), replayable=True)
    return (yield from core.send(call)).content


def thumbnail(core: Core, item_id: str, size: int = 128,
              model_version: str | None = None) -> Plan[bytes]:
    """A WebP thumbnail of an indexed item's image, fitting in size x size (16, 32, 64, 96,
    128 or 256)."""
    version = yield from current_version(core, model_version)
    call = Call("GET", path("models", version, "thumbnails", item_id),
                params=params(size=size), replayable=True)
    return (yield from core.send(call)).content

