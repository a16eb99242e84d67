"""`python -m service.client`: the live collection from a shell, over the HTTP API.

    python -m service.client add photos/*.jpg --prefix added/2026-11-27/ [--label cat]
    python -m service.client add shots.zip --prefix added/2026-11-27/      # an archive
    python -m service.client find query.jpg [-k 5]                         # search by image
    python -m service.client get added/2026-11-27/0001.jpg
    python -m service.client delete added/2026-11-27/0001.jpg [more ids]

The API's address comes from --url (default $AND_API_URL, else http://127.0.0.1:8000) and the
key from $ADMIN_API_KEY (adds and deletes) or $READ_API_KEY (reads); a key is never an argument,
so it never lands in a shell history. Only the standard library: it runs wherever Python does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any

from service.http_calls import FilePart, HttpError, multipart, request

CHUNK = 64  # images per request (the API's default MAX_IMAGES_PER_REQUEST)


def _request(url: str, method: str, path: str, key: str | None, body: bytes | None = None,
             content_type: str | None = None, query: dict[str, str] | None = None) -> Any:
    full = url.rstrip("/") + urllib.parse.quote(path) + (
        "?" + urllib.parse.urlencode(query) if query else "")
    try:
        return request(method, full, key, body, content_type)
    except HttpError as exc:
        raise SystemExit(f"error: {exc.status} {exc.detail}") from None
    except urllib.error.URLError as exc:
        raise SystemExit(f"error: cannot reach {url}: {exc.reason}") from None


def _add(args: argparse.Namespace, key: str | None) -> None:
    paths = [Path(p) for p in args.paths]
    archives = [p for p in paths if p.suffix.lower() in (".zip", ".tar", ".gz", ".tgz")]
    fields = [("prefix", args.prefix)] + ([("label", args.label)] if args.label else [])
    query = {"upsert": "true"} if args.upsert else None
    batches = [[("archive", a)] for a in archives]
    images = [p for p in paths if p not in archives]
    batches += [[("files", p) for p in images[i:i + CHUNK]]
                for i in range(0, len(images), CHUNK)]
    for files in batches:
        body, kind = multipart(fields, [FilePart.of(name, path) for name, path in files])
        answer = _request(args.url, "POST", "/items", key, body, kind, query)
        print(f"added {len(answer['ids'])} items to {answer['dataset']} "
              f"(model {answer['model_version']}, log position {answer['seq']})")


def _find(args: argparse.Namespace, key: str | None) -> None:
    body, kind = multipart([("k", str(args.k))], [FilePart.of("files", Path(args.image))])
    answer = _request(args.url, "POST", "/search", key, body, kind)
    for n in answer["results"][0]["neighbours"]:
        print(f"{n['score']:.4f}  {n['id']}" + (f"  ({n['label']})" if n["label"] else ""))


def _get(args: argparse.Namespace, key: str | None) -> None:
    print(json.dumps(_request(args.url, "GET", f"/items/{args.id}", key), indent=2))


def _delete(args: argparse.Namespace, key: str | None) -> None:
    body = json.dumps({"ids": args.ids}).encode()
    answer = _request(args.url, "DELETE", "/items", key, body, "application/json")
    print(f"deleted {len(answer['ids'])} items (log position {answer['seq']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.client", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("AND_API_URL", "http://127.0.0.1:8000"))
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="add images (files or archives) to the served collection")
    a.add_argument("paths", nargs="+")
    a.add_argument("--prefix", required=True, help="ids are this + each file's name")
    a.add_argument("--label", default=None)
    a.add_argument("--upsert", action="store_true", help="replace items that exist")
    f = sub.add_parser("find", help="the nearest items of an image")
    f.add_argument("image")
    f.add_argument("-k", type=int, default=10)
    g = sub.add_parser("get", help="an item: label, model, when it was added")
    g.add_argument("id")
    d = sub.add_parser("delete", help="delete items (all, or none when one is missing)")
    d.add_argument("ids", nargs="+")
    args = p.parse_args(argv)
    admin = args.command in ("add", "delete")
    key = os.environ.get("ADMIN_API_KEY") if admin else (
        os.environ.get("READ_API_KEY") or os.environ.get("ADMIN_API_KEY"))
    {"add": _add, "find": _find, "get": _get, "delete": _delete}[args.command](args, key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
