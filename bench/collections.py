"""Many collections in one API, in one run on one machine:

1. 1, 10 and 50 collections of 10,000 items each (small CNN encoder, exact index), all loaded:
   p50/p99 of `/collections/{name}/neighbours/{id}` and `/collections/{name}/embed` with 32
   clients whose requests go round all the collections, against the same load on 1
   collection (goal: p99 at most 1.5x).
2. Resident memory per loaded collection: the API process's RSS with N collections loaded, less
   its RSS with one, over N - 1 (and the API's own count, `and_collection_loaded_bytes`).
3. The first request to a collection that is not loaded (SERVE_MEMORY_MB holding about 10 of
   50): its latency, loading included (goal: under 1 s).

    python -m bench.collections [--counts 1 10 50] [--items 10000] [--duration 8]

Every collection is a copy of one bundle under its own name (same vectors and weights, its own
files, its own loaded copy): the load is what is measured, not the training.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import report
from bench.loadgen import load, request_bytes
from bench.serve import make_bundle, png_32, start_api
from service.http_calls import FilePart, multipart
from trainer.current import set_current

BACKBONE = "small_cnn"
CLIENTS = 32


def name_of(i: int) -> str:
    return f"c{i:02d}"


def make_collections(root: Path, template: Path, count: int) -> list[str]:
    """`count` collections, each a copy of the `template` bundle renamed, current in its own
    collection."""
    names = []
    for i in range(count):
        name = name_of(i)
        version = f"20260101-000000-{name}"
        shutil.copytree(template, root / version)
        manifest_path = root / version / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest |= {"version": version, "dataset": name}
        manifest_path.write_text(json.dumps(manifest))
        set_current(root, version)
        names.append(name)
    return names


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) * 1024 if match else 0


def loaded_bytes(url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("and_collection_loaded_bytes{"):
            out[line.split('"')[1]] = float(line.split()[-1])
    return out


def loaded_names(url: str) -> set[str]:
    rows = httpx.get(f"{url}/collections", timeout=30).json()["data"]
    return {row["name"] for row in rows if row["loaded"]}


def wait_loaded(url: str, names: list[str], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not set(names) <= loaded_names(url):
        if time.monotonic() > deadline:
            raise RuntimeError("the collections did not all load")
        time.sleep(0.5)


def run_loads(port: int, names: list[str], items: int, seconds: float) -> dict[str, dict]:
    host = f"127.0.0.1:{port}"
    rng = np.random.default_rng(0)
    ids = [f"item/{i:07d}.jpg" for i in rng.integers(0, items, 20_000)]
    neighbour_requests = [request_bytes("GET", f"/collections/{names[j % len(names)]}/"
                                        f"neighbours/{item}?k=10", host)
                          for j, item in enumerate(ids)]
    body, ctype = multipart([], [FilePart("files", "q.png", png_32(), "image/png")])
    embed_requests = [request_bytes("POST", f"/collections/{name}/embed", host, body, ctype)
                      for name in names]
    out = {}
    for route, requests in (("neighbours", neighbour_requests), ("embed", embed_requests)):
        turn = itertools.cycle(requests)
        load("127.0.0.1", port, CLIENTS, 2, lambda turn=turn: next(turn))  # warm-up
        out[route] = load("127.0.0.1", port, CLIENTS, seconds, lambda turn=turn: next(turn))
        print(f"{len(names)} collections /{route}: {out[route]}", flush=True)
    return out


def cold_requests(work: Path, template: Path, count: int, port: int) -> dict:
    """First requests to unloaded collections, with a budget that holds about 10 of `count`."""
    models = work / "cold" / "models"
    models.mkdir(parents=True)
    names = make_collections(models, template, count)
    probe = start_api(models, work / "cold", port, settings={"SERVE_MEMORY_MB": "0"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_loaded(url, names[:1])
        per_collection = statistics.median(loaded_bytes(url).values())
    finally:
        probe.terminate()
        probe.wait(30)
    budget_mb = max(1, int(per_collection * 10.5 / 2**20))
    proc = start_api(models, work / "cold", port, settings={"SERVE_MEMORY_MB": str(budget_mb)})
    latencies = []
    try:
        for name in names:
            if name in loaded_names(url):
                continue
            t0 = time.perf_counter()
            r = httpx.get(f"{url}/collections/{name}/neighbours/item/0000001.jpg",
                          params={"k": 10}, timeout=60)
            latencies.append(time.perf_counter() - t0)
            r.raise_for_status()
        loaded = len(loaded_names(url))
    finally:
        proc.terminate()
        proc.wait(30)
    ms = sorted(1000 * x for x in latencies)
    return {"collections": count, "serve_memory_mb": budget_mb, "loaded_at_end": loaded,
            "cold_requests": len(ms), "p50_ms": round(statistics.median(ms), 1),
            "max_ms": round(ms[-1], 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", type=int, nargs="+", default=[1, 10, 50])
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--port", type=int, default=8775)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    results: dict = {"items_per_collection": args.items, "backbone": BACKBONE,
                     "clients": CLIENTS, "load_average_before": [round(x, 2)
                                                                 for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        staging = work / "staging"
        make_bundle(staging, work / "run", "template", args.items, "flat", BACKBONE)
        template = staging / "template"
        url = f"http://127.0.0.1:{args.port}"
        results["runs"] = []
        for count in args.counts:
            models = work / f"n{count}" / "models"
            models.mkdir(parents=True)
            names = make_collections(models, template, count)
            proc = start_api(models, work / f"n{count}", args.port,
                             settings={"SERVE_MEMORY_MB": "0"})
            try:
                wait_loaded(url, names)
                for name in names:  # every collection answers once before the loads
                    httpx.get(f"{url}/collections/{name}/neighbours/item/0000001.jpg",
                              timeout=60).raise_for_status()
                run = {"collections": count, "rss_bytes": rss_bytes(proc.pid),
                       "api_loaded_bytes": round(sum(loaded_bytes(url).values()))}
                run |= run_loads(args.port, names, args.items, args.duration)
                results["runs"].append(run)
            finally:
                proc.terminate()
                proc.wait(30)
        one = next((r for r in results["runs"] if r["collections"] == 1), None)
        for run in results["runs"]:
            if one is None or run is one:
                continue
            extra = run["collections"] - 1
            run["rss_per_extra_collection_mb"] = round(
                (run["rss_bytes"] - one["rss_bytes"]) / extra / 2**20, 1)
            run["api_loaded_mb_per_collection"] = round(
                run["api_loaded_bytes"] / run["collections"] / 2**20, 1)
            for route in ("neighbours", "embed"):
                run[f"{route}_p99_vs_one"] = round(run[route]["p99_ms"] /
                                                   one[route]["p99_ms"], 2)
        results["cold"] = cold_requests(work, template, max(args.counts), args.port)
        print(f"cold: {results['cold']}", flush=True)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report("collections", results, args.out)


if __name__ == "__main__":
    main()
