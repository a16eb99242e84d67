"""The whole system on one machine, without Docker or Redis (the embedded default).

Starts the API and a worker as child processes, uploads a dataset through the API (patches of
scikit-learn's two sample photos unless --data names a folder or archive), trains a model with
POST /train, follows the job to its published bundle, and prints requests that work against it
and the model's kNN accuracy beside that of raw pixels (without labels, its label-free score).
Ctrl-C stops everything it started. Run through `bash deploy/local.sh up`, which also sets up
the virtual environment.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from deploy.local_stack_text import (
    changed_note,
    dataset_name,
    figures_line,
    file_field,
    kept_out_hint,
    progress_line,
    skipped_note,
)

REPO = Path(__file__).resolve().parents[1]
DEMO_DATASET = "photo-patches"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bash deploy/local.sh up", description=__doc__)
    p.add_argument("--data", help="folder, .zip or .tar(.gz) of your images (default: patches of "
                   "scikit-learn's sample photos, `python -m trainer sample-data "
                   "--photo-patches`)")
    p.add_argument("--name", help=f"dataset name (default: from --data, or {DEMO_DATASET!r})")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend",
                   default=[], help="training config overrides, e.g. --set epochs_per_round=20")
    p.add_argument("--promote", choices=("gate", "always", "never"), default="gate",
                   help="what the model becomes: current only on a measured gain over raw "
                   "pixels or the current model (gate, the default), current anyway, or a "
                   "candidate")
    p.add_argument("--no-train", action="store_true",
                   help="only start the API and the worker")
    p.add_argument("--exit-when-done", action="store_true",
                   help="stop everything once the model is published (for scripts and CI)")
    args = p.parse_args(argv)

    home = Path(os.environ.get("AND_HOME", REPO / "var"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("DATA_ROOT", str(home / "data"))
    env.setdefault("MODELS_ROOT", str(home / "models"))
    env.setdefault("STATE_ROOT", str(home / "state"))
    key = env.setdefault("ADMIN_API_KEY", _saved_key(home))
    base = f"http://127.0.0.1:{args.port}"
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    children: list[subprocess.Popen] = []
    print(f"Console: {base}/  (open it in a browser once the API is ready; the admin key it "
          f"asks for is in {home / 'admin.key'})", flush=True)

    def stop_all(*_: Any) -> None:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()

    def start(name: str, *cmd: str) -> None:
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        children.append(subprocess.Popen([sys.executable, *cmd], cwd=REPO, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True))
        print(f"started {name} (pid {children[-1].pid}); log: {logs / f'{name}.log'}")

    # SIGINT too: a shell starts a background command with SIGINT ignored, and Python then
    # leaves it ignored, so a Ctrl-C (or kill -INT) would stop nothing.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        start("worker", "-m", "worker")
        start("api", "-m", "service", "--host", "127.0.0.1", "--port", str(args.port))
        _wait_healthy(base, children)
        print(f"API ready at {base} (console: {base}/, docs: {base}/docs); jobs run on the "
              f"embedded queue, data and models live in {home}")
        if not args.no_train:
            dataset, version = _demo(base, key, args, home)
            _print_examples(base, key, dataset, version, env["DATA_ROOT"])
        if args.exit_when_done:
            return 0
        print("\nPress Ctrl-C to stop the API and the worker.")
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("a process stopped unexpectedly; see the logs above", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all()
        print("stopped the API and the worker")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _saved_key(home: Path) -> str:
    """A random admin key, kept between runs so printed examples keep working."""
    path = home / "admin.key"
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(24)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def _request(method: str, url: str, key: str | None = None, body: bytes | None = None,
             content_type: str | None = None) -> Any:
    from service.http_calls import request  # the project's packages: on the path from main

    return request(method, url, key, body, content_type)


def _wait_healthy(base: str, children: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(c.poll() is not None for c in children):
            raise RuntimeError("the API or the worker exited during start-up; see its log")
        try:
            _request("GET", f"{base}/healthz")
            return
        except (OSError, RuntimeError):
            time.sleep(0.5)
    raise RuntimeError("the API did not answer within 120 s")


def _source(args: argparse.Namespace) -> tuple[str, Path | None]:
    """(dataset name, the folder or archive given; None for the demo)."""
    if not args.data:
        return args.name or DEMO_DATASET, None
    src = Path(args.data).expanduser().resolve()
    if not src.exists():
        raise RuntimeError(f"{src} does not exist")
    return args.name or dataset_name(src.name), src


def _archive_of(src: Path | None, name: str, workdir: Path) -> Path:
    """The archive to upload: `src` itself, a zip of it, or of the demo's patches."""
    if src is not None:
        return Path(shutil.make_archive(str(workdir / name), "zip", src)) if src.is_dir() else src
    from trainer.sample_data import PHOTO_REGIONS, write_photo_patches

    folder = write_photo_patches(workdir / DEMO_DATASET)
    print(f"demo data: patches of scikit-learn's two sample photos, one class per region "
          f"({', '.join(PHOTO_REGIONS)}), each at a random place and scale, flipped and re-lit")
    return Path(shutil.make_archive(str(workdir / DEMO_DATASET), "zip", folder))


def _demo(base: str, key: str, args: argparse.Namespace, home: Path) -> tuple[str, str]:
    """Upload (unless there already) and train; returns the dataset and its new version."""
    name, src = _source(args)
    existing = {d["name"]: d for d in _request("GET", f"{base}/datasets", key)["data"]}
    with tempfile.TemporaryDirectory() as tmp:
        if name in existing:  # checked first: zipping a large folder again would take minutes
            print(f"dataset {name!r} is already uploaded; training on it")
            note = changed_note(src, existing[name]["items"]) if src else None
            if note:
                print(note)
        else:
            archive = _archive_of(src, name, Path(tmp))
            print(f"uploading {archive.name} as dataset {name!r}...")
            from service.http_calls import FilePart, multipart

            body, ctype = multipart([("name", name)], [FilePart.of(
                "file", archive, "application/octet-stream")])
            summary = _request("POST", f"{base}/datasets", key, body, ctype)
            print(f"  {summary['items']} images, {len(summary['classes'])} classes, "
                  f"splits {summary['splits']}")
            if summary.get("layout_note"):
                print(f"  note: {summary['layout_note']}")
    from trainer.sample_data import DEMO_CONFIG

    config = dict(DEMO_CONFIG)
    for pair in args.overrides:
        k, _, v = pair.partition("=")
        try:
            config[k] = json.loads(v)
        except json.JSONDecodeError:
            config[k] = v
    job = _request("POST", f"{base}/train", key,
                   json.dumps({"dataset": name, "config": config, "promote": args.promote}
                              ).encode(), "application/json")
    print(f"training job {job['id']} queued with config {json.dumps(config)}")
    last = None
    while True:
        job = _request("GET", f"{base}/jobs/{job['id']}", key)
        p = job["progress"]
        line = progress_line(job["status"], p)
        if line != last:
            print("  " + line)
            last = line
        if job["status"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(1)
    if job["status"] != "succeeded":
        raise RuntimeError(f"the job ended {job['status']}: {job['error']}")
    return name, job["model_version"]


def _print_examples(base: str, key: str, dataset: str, version: str, data_root: str) -> None:
    # The dataset's own collection, not the API's default one: with an earlier run's
    # collection beside it, the routes at the root serve that one, or answer 409.
    coll = urllib.parse.quote(dataset, safe="")
    api = f"{base}/collections/{coll}"
    model = _request("GET", f"{api}/models/{version}", key)
    metrics = model.get("metrics", {})
    gate = model.get("gate") or {}
    auth = f"-H 'Authorization: Bearer {key}'"
    some_id = _first_item(api, key, version)
    if model["current"]:
        print(f"\nmodel {version} is published and current: {model['item_count']} items "
              "indexed")
        _wait_serving(api, key, version, some_id)
        pin = ""
    else:
        print(f"\nmodel {version} is published as a candidate, not current: "
              f"{model['item_count']} items indexed. Promote it by hand with\n  curl -s -X POST "
              f"{auth} {api}/models/{version}/promote\n(the requests below pin it)")
        pin = f"model_version={urllib.parse.quote(version)}"
    left_out = skipped_note(metrics)
    if left_out:
        print(left_out)
    if gate:
        print(f"promotion gate ({gate.get('policy')}): {gate.get('reason')}")
        hint = kept_out_hint(gate, model["item_count"])
        if hint:
            print(hint)
    image = Path(data_root) / model["dataset"] / some_id
    q = urllib.parse.quote(some_id)
    nb = _request("GET", f"{api}/neighbours/{q}?k=3{'&' + pin if pin else ''}", key)
    print(f"neighbours of {some_id}: " + ", ".join(
        f"{n['id']} ({n['score']:.4f})" for n in nb["neighbours"]))
    # Printed for a shell: ids and paths may hold spaces, quotes or any other character.
    query = "?" + pin if pin else ""
    tried = [
        "curl -s " + shlex.quote(f"{api}/models/{version}"),
        "curl -s " + shlex.quote(f"{api}/neighbours/{q}?k=5{'&' + pin if pin else ''}"),
        f"curl -s -F {file_field(image)} " + shlex.quote(f"{api}/embed{query}"),
        f"curl -s -F {file_field(image)} -F k=5 " + shlex.quote(f"{api}/search{query}"),
    ]
    if model.get("labelled_items"):
        ids = shlex.quote(json.dumps({"ids": [some_id]}))
        tried.append(f"curl -s -H 'Content-Type: application/json' -d {ids} "
                     + shlex.quote(f"{api}/classify{query}"))
    tried.append(f"curl -s {auth} {base}/jobs")
    look = f"{base}/#/explore?collection={coll}"
    print(f"\nLook at it: {look} (Explore; Map for the embedding map)\nTry it (the admin key "
          f"is in {Path(os.environ.get('AND_HOME', REPO / 'var')) / 'admin.key'}):")
    for line in tried:
        print("  " + line)
    if not model.get("labelled_items"):
        print("(no class folders: /classify needs labelled items to vote)")
    print()
    print(figures_line(metrics))


def _first_item(api: str, key: str, version: str) -> str:
    return _request("GET", f"{api}/models/{version}/items?limit=1", key)["data"][0]["id"]


def _wait_serving(api: str, key: str, version: str, item: str) -> None:
    """The API swaps to a new model within a second or so of its publication, and loads a
    collection on its first request: wait until a query of `api` (a collection's routes)
    answers with `version`."""
    url = f"{api}/neighbours/{urllib.parse.quote(item)}?k=1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _request("GET", url, key).get("model_version") == version:
                return
        except (OSError, RuntimeError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API did not load model {version} within 60 s")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
