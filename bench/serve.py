"""Serving benchmark, in one run on one machine:

1. /embed images/s at 1, 8 and 32 concurrent clients (one 32x32 PNG per request) against the
   raw batched forward throughput of the same model (the faster of two layouts: one stream
   over every core, one single-threaded stream per core): their ratio is the figure (goal
   >= 0.8).
2. /neighbours p50/p99 latency at 50,000 and 1,000,000 items, exact and HNSW, with the HNSW
   index's recall@10 (embedding-like synthetic vectors: clustered, low-rank), at one client
   unless `--neighbour-clients` names more loads.

    python -m bench.serve [--sizes 50000 1000000] [--duration 10] [--engine onnxruntime]
                          [--embed-only | --neighbours-only] [--neighbour-clients 1 32]
                          [--profile]

`--engine`: the API's INFERENCE_ENGINE, and what the raw forward is measured with.
Each load reports the server's CPU per request; for `/embed` also the part beyond the model
(the CPU per request less the raw forward's CPU per image). `--profile` (needs py-spy) then
samples the server under `/embed` at 32 clients and under exact `/neighbours` at one client:
flame graphs beside `--out` (OUT_embed.svg, OUT_neighbours.svg; without `--out`,
bench/results/serve_profile_*.svg), and the CPU per request split by part
(bench/profile_split.py). `python -m bench.serve_settings` compares API settings in
interleaved loads.

The load generator (bench/loadgen.py: raw HTTP/1.1 on keep-alive sockets, one process)
shares the machine with the server and reports its own CPU use.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from bench import profile_split
from bench.common import REPO, report
from bench.loadgen import load, request_bytes
from service.http_calls import FilePart, multipart
from trainer.backbones import Encoder
from trainer.bundle import set_current, write_bundle
from trainer.config import TrainConfig
from trainer.device import cpu_count
from trainer.encoder_file import EncoderMeta, save_encoder
from trainer.engines import ENGINES, load_embedder


def embedding_like(n: int, d: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, 32)).astype(np.float32)
    x = centres[rng.integers(0, 1000, n)] + 0.5 * rng.normal(size=(n, 32)).astype(np.float32)
    x = x @ rng.normal(size=(32, d)).astype(np.float32) + 0.1 * rng.normal(size=(n, d)).astype(
        np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_bundle(models: Path, work: Path, version: str, n: int, index: str,
                backbone: str, dataset: str = "synthetic") -> None:
    run = work / version
    run.mkdir(parents=True)
    torch.manual_seed(0)
    encoder = Encoder(backbone, 128)
    size = TrainConfig(backbone=backbone).input_size
    save_encoder(run / "encoder.pt", encoder,
                 EncoderMeta(backbone, 128, size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    (run / "config.json").write_text(json.dumps(TrainConfig(backbone=backbone).to_dict()))
    (run / "metrics.json").write_text("{}")
    ids = np.asarray([f"item/{i:07d}.jpg" for i in range(n)])
    np.savez(run / "embeddings.npz", vectors=embedding_like(n), ids=ids,
             labels=np.full(n, -1), classes=np.asarray([], dtype=str), is_eval=np.zeros(n, bool))
    t0 = time.time()
    # One collection for all: a version is served (pinned by model_version) in its own collection.
    # No 2-D map: no route measured here reads it, and at 50,000 items it takes minutes.
    write_bundle(run, models, dataset=dataset, version=version, index_kind=index, map_points=0)
    print(f"built {version} in {time.time() - t0:.0f}s", flush=True)


def png_32() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def raw_forward(models: Path, version: str, batch: int, seconds: float = 10,
                engine: str = "torch") -> float:
    """The model's best batched throughput here (images/s): the faster of its two layouts."""
    return max(raw_forward_layouts(models, version, batch, seconds / 2, engine).values())


def raw_forward_layouts(models: Path, version: str, batch: int, seconds: float = 10,
                        engine: str = "torch") -> dict[str, float]:
    """Images/s of the batched forward laid out two ways: `team`, one stream whose kernels use
    every core; `streams`, one single-threaded stream per core, as the API's inference threads
    run (service/batcher.py). Which is faster depends on the machine (on one 2-core AMX
    machine the streams embedded 875 images/s, the team 819), and the reference for the API
    is the faster: the model's own best on these cores."""
    cores = cpu_count()

    def measure(streams: int, threads: int) -> float:
        embedders = [load_embedder(models / version, engine, threads=threads)
                     for _ in range(streams)]
        size = embedders[0].meta.image_size
        images = torch.randint(0, 255, (batch, 3, size, size), dtype=torch.uint8)
        counts = [0] * streams
        start = threading.Barrier(streams + 1)

        def run(i: int) -> None:
            torch.set_num_threads(threads)  # per calling thread with OpenMP
            for _ in range(3):
                embedders[i].embed_uint8(images)
            start.wait()
            while time.perf_counter() < stop:
                embedders[i].embed_uint8(images)
                counts[i] += batch

        workers = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
        stop = float("inf")
        for w in workers:
            w.start()
        start.wait()
        t0 = time.perf_counter()
        stop = t0 + seconds
        for w in workers:
            w.join()
        return sum(counts) / (time.perf_counter() - t0)

    return {"team": round(measure(1, cores), 1), "streams": round(measure(cores, 1), 1)}


def start_api(models: Path, state: Path, port: int, engine: str = "torch",
              settings: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "MODELS_ROOT": str(models), "DATA_ROOT": str(state / "data"),
           "STATE_ROOT": str(state), "ADMIN_API_KEY": "bench-admin-key-0123456789",
           "INFERENCE_ENGINE": engine, **(settings or {})}
    env.pop("BROKER_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port),
                             "--log-level", "warning"], cwd=REPO, env=env)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the API did not become ready")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_request(r: dict, cpu_s: float, seconds: float) -> None:
    """The server's CPU share over a load and its CPU milliseconds per request, into `r`."""
    r["server_cpu_share"] = round(cpu_s / seconds, 2)
    r["server_cpu_ms_per_request"] = round(1000 * cpu_s / max(r["requests_per_s"] * seconds, 1),
                                           3)


def profiled(pid: int, port: int, clients: int, seconds: float, next_request,
             svg: Path) -> dict[str, float]:
    """A flame graph of the server under this load, and its CPU per request split by part."""
    svg.parent.mkdir(parents=True, exist_ok=True)
    spy = profile_split.record(pid, seconds, svg, "flamegraph")
    load("127.0.0.1", port, clients, seconds, next_request)
    spy.wait()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "stacks.txt"
        spy = profile_split.record(pid, seconds, raw, "raw")
        r = load("127.0.0.1", port, clients, seconds, next_request)
        spy.wait()
        return profile_split.split(raw, r["requests_per_s"] * seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[50_000, 1_000_000])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--backbone", default="resnet18_cifar")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--engine", default="torch", choices=ENGINES)
    only = p.add_mutually_exclusive_group()
    only.add_argument("--embed-only", action="store_true", help="no /neighbours figures")
    only.add_argument("--neighbours-only", action="store_true", help="no raw forward or "
                      "/embed figures")
    p.add_argument("--neighbour-clients", type=int, nargs="+", default=[1],
                   help="concurrent clients of each /neighbours load")
    p.add_argument("--profile", action="store_true", help="flame graphs and the CPU split "
                   "(py-spy)")
    p.add_argument("--out", default=None, help="the JSON figures; with --profile the flame "
                   "graphs go beside it (OUT_embed.svg...), else to bench/results/")
    args = p.parse_args()
    svg_stem = (Path(args.out).with_suffix("") if args.out else
                REPO / "bench" / "results" / "serve_profile")
    results: dict = {"backbone": args.backbone, "engine": args.engine,
                     "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        models, work = tmp_path / "models", tmp_path / "work"
        versions = []
        for n in args.sizes:
            for index in ("flat",) if args.embed_only else ("flat", "hnsw"):
                version = f"v-{n}-{index}"
                make_bundle(models, work, version, n, index, args.backbone)
                versions.append((n, index, version))
        set_current(models, versions[0][2])
        model_ms = 0.0
        if not args.neighbours_only:
            batch = 64  # the batcher's largest batch (EMBED_MAX_BATCH)
            layouts = raw_forward_layouts(models, versions[0][2], batch, engine=args.engine)
            results["raw_forward_layouts"] = layouts
            results["raw_forward_images_per_s"] = max(layouts.values())
            print(f"raw batched forward (batch {batch}): {layouts} img/s", flush=True)
            # The raw forward keeps every core busy: its CPU per image is the model's cost.
            model_ms = 1000 * cpu_count() / results["raw_forward_images_per_s"]
            results["model_cpu_ms_per_image"] = round(model_ms, 3)
        proc = start_api(models, tmp_path, args.port, args.engine)
        url = f"http://127.0.0.1:{args.port}"
        try:
            host = f"127.0.0.1:{args.port}"
            body, ctype = multipart([], [FilePart("files", "q.png", png_32(), "image/png")])
            embed_request = request_bytes("POST", "/embed", host, body, ctype)

            results["embed"] = []
            for clients in () if args.neighbours_only else (1, 8, 32):
                load("127.0.0.1", args.port, clients, 2, lambda: embed_request)  # warm-up
                cpu0 = process_cpu_s(proc.pid)
                r = load("127.0.0.1", args.port, clients, args.duration, lambda: embed_request)
                cpu_per_request(r, process_cpu_s(proc.pid) - cpu0, args.duration)
                r["beyond_model_cpu_ms"] = round(r["server_cpu_ms_per_request"] - model_ms, 3)
                r["ratio_to_raw"] = round(r["requests_per_s"] /
                                          results["raw_forward_images_per_s"], 3)
                print(f"/embed {r}", flush=True)
                results["embed"].append(r)
            if args.profile:
                results["embed_split_ms"] = profiled(proc.pid, args.port, 32, args.duration,
                                                     lambda: embed_request,
                                                     Path(f"{svg_stem}_embed.svg"))
                print(f"/embed at 32 clients, CPU ms per request: {results['embed_split_ms']}",
                      flush=True)

            results["neighbours"] = []
            rng = np.random.default_rng(1)
            for n, index, version in [] if args.embed_only else versions:
                manifest = httpx.get(f"{url}/models/{version}").json()
                ids = [f"item/{i:07d}.jpg" for i in rng.integers(0, n, 100_000)]
                requests = [request_bytes(
                    "GET", f"/neighbours/{i}?k=10&model_version={version}", host) for i in ids]
                counter = iter(range(10**9))

                def neighbours(requests=requests, counter=counter) -> bytes:
                    return requests[next(counter) % len(requests)]

                for clients in args.neighbour_clients:
                    load("127.0.0.1", args.port, clients, 2, neighbours)
                    cpu0 = process_cpu_s(proc.pid)
                    r = load("127.0.0.1", args.port, clients, args.duration, neighbours)
                    cpu_per_request(r, process_cpu_s(proc.pid) - cpu0, args.duration)
                    r |= {"items": n, "index": index,
                          "recall_at_10": manifest["index"]["recall_at_10"],
                          "index_params": manifest["index"]["params"],
                          "build_s": manifest["index"]["build_s"]}
                    print(f"/neighbours {r}", flush=True)
                    results["neighbours"].append(r)
                if args.profile and index == "flat" and "neighbours_split_ms" not in results:
                    results["neighbours_split_ms"] = profiled(
                        proc.pid, args.port, 1, args.duration, neighbours,
                        Path(f"{svg_stem}_neighbours.svg"))
                    results["neighbours_split_items"] = n
                    print(f"/neighbours exact at {n} items, CPU ms per request: "
                          f"{results['neighbours_split_ms']}", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report("serve", results, args.out)


if __name__ == "__main__":
    main()
