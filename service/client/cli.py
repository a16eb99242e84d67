"""`python -m service.client`: the live collection from a shell, over the HTTP API.

    python -m service.client add photos/*.jpg --prefix added/2026-11-27/ [--label cat]
    python -m service.client add shots.zip --prefix added/2026-11-27/      # an archive
    python -m service.client add shots/ --prefix added/2026-11-27/         # a folder, as one
    python -m service.client find query.jpg [-k 5]                         # search by image
    python -m service.client find query.jpg --label cat --label dog --prefix added/  # filtered
    python -m service.client get added/2026-11-27/0001.jpg
    python -m service.client list [--prefix added/] [--label cat]          # id and label
    python -m service.client delete added/2026-11-27/0001.jpg [more ids]

The API's address comes from --url (default $AND_API_URL, else http://127.0.0.1:8000) and the
key from $ADMIN_API_KEY (adds and deletes) or $READ_API_KEY (reads); a key is never an argument,
so it never lands in a shell history. Built on service.client.Client: requests turned away
with 503 are sent again after the wait the API asks for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import httpx

from service.client.core import ApiError
from service.client.sync import Client

ARCHIVES = (".zip", ".tar", ".gz", ".tgz")


def _add(api: Client, args: argparse.Namespace) -> None:
    paths = [Path(p) for p in args.paths]
    # A folder goes as one archive of its files (ids: prefix + the path below it), all or
    # nothing, as an archive does.
    archives = [p for p in paths if p.suffix.lower() in ARCHIVES or p.is_dir()]
    images = [p for p in paths if p not in archives]
    added = 0  # items, by the requests that succeeded so far
    sent = 0  # of `images`, in those requests
    try:
        for archive in archives:
            answer = api.add_archive(archive, prefix=args.prefix, label=args.label,
                                     upsert=args.upsert)
            added += len(answer.ids)
            _added(answer.ids, answer.dataset, answer.model_version, answer.seq)
        if images:
            for batch in api.add_batches(images, prefix=args.prefix, label=args.label,
                                         upsert=args.upsert):
                added += len(batch.ids)
                sent += len(batch.ids)
                _added(batch.ids, batch.dataset, batch.model_version, batch.seq)
    except ApiError as exc:
        if not added:
            raise
        # Each request is all or nothing, but those before the refused one went through.
        left = f"; {len(images) - sent} of the {len(images)} files were not" if images else ""
        raise SystemExit(
            f"error: {error_text(exc)}\n{_items(added)} {'was' if added == 1 else 'were'} "
            "added by the "
            f"requests before this one{left} (to send the rest again: --upsert, or only the "
            "files not added)") from None


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def _added(ids: list[str], dataset: str, version: str, seq: int) -> None:
    print(f"added {_items(len(ids))} to {dataset} (model {version}, log position {seq})")


def _find(api: Client, args: argparse.Namespace) -> None:
    found = api.search([args.image], k=args.k, labels=args.label, prefix=args.prefix)
    for n in found.results[0].neighbours:
        print(f"{n.score:.4f}  {n.id}" + (f"  ({n.label})" if n.label else ""))


def _get(api: Client, args: argparse.Namespace) -> None:
    print(json.dumps(dataclasses.asdict(api.item(args.id)), indent=2, ensure_ascii=False))


def _list(api: Client, args: argparse.Namespace) -> None:
    # One line per item, tab-separated, so that cut, grep and xargs can take it from here.
    for item in api.items(label=args.label, prefix=args.prefix):
        print(f"{item.id}\t{item.label or ''}")


def _delete(api: Client, args: argparse.Namespace) -> None:
    answer = api.delete_items(args.ids)
    print(f"deleted {_items(len(answer.ids))} (log position {answer.seq})")


def error_text(exc: ApiError) -> str:
    """The API's problem, in this command's terms where it names an API route to use."""
    names = [e["collection"] for e in exc.errors or [] if "collection" in e]
    if exc.status == 409 and names:  # several collections and no default one
        return (f"409 this service has several collections ({', '.join(names)}): choose one "
                "with --collection NAME or $AND_COLLECTION")
    listed = [f"\n  {e['item']}: {e['detail']}" for e in exc.errors or [] if "item" in e]
    return f"{exc.status} {exc.detail or exc.title}" + ("".join(listed) if len(listed) > 1
                                                        else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.client", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None,
                   help="the API (default $AND_API_URL, else http://127.0.0.1:8000)")
    p.add_argument("--collection", default=None,
                   help="the collection to use (default $AND_COLLECTION, else the API's "
                   "default collection)")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="add images (files, archives or folders) to the collection")
    a.add_argument("paths", nargs="+")
    a.add_argument("--prefix", required=True, help="ids are this + each file's name")
    a.add_argument("--label", default=None)
    a.add_argument("--upsert", action="store_true", help="replace items that exist")
    f = sub.add_parser("find", help="the nearest items of an image")
    f.add_argument("image")
    f.add_argument("-k", type=int, default=10)
    f.add_argument("--label", action="append", default=None,
                   help="only items of this class (repeat for several: any of them)")
    f.add_argument("--prefix", default=None, help="only items whose id starts with this")
    g = sub.add_parser("get", help="an item: label, model, when it was added")
    g.add_argument("id")
    li = sub.add_parser("list", help="the collection's items, one per line: id, a tab, label")
    li.add_argument("--label", default=None, help="only items of this class")
    li.add_argument("--prefix", default=None, help="only items whose id starts with this")
    d = sub.add_parser("delete", help="delete items (all, or none when one is missing)")
    d.add_argument("ids", nargs="+")
    args = p.parse_args(argv)
    # Reads go with the read key (or the admin key); only changes need the admin key.
    command = {"add": _add, "find": _find, "get": _get, "list": _list,
               "delete": _delete}[args.command]
    with Client(args.url, collection=args.collection) as api:
        try:
            command(api, args)
        except ApiError as exc:
            raise SystemExit(f"error: {error_text(exc)}") from None
        except httpx.TransportError as exc:
            raise SystemExit(f"error: cannot reach {api.url}: {exc}") from None
        except BrokenPipeError:
            # Whatever read the output stopped (`list | head`): stop too, as cat does, with
            # nothing more to flush into the closed pipe at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except OSError as exc:  # a file named on the command line: missing, a folder...
            raise SystemExit(f"error: cannot read {exc.filename}: {exc.strerror}") from None
    return 0
