"""The live collection, in one run on one machine:

1. Add throughput: POST /items through HTTP, 64 PNGs (32x32) per request, against the raw
   batched forward of the same model (batch 64) measured in the same run (goal >= 0.7).
2. /neighbours p50/p99 at 100,000 items, idle and while adds run at full speed (goal: p99 at
   most 2x the idle one).
3. Recall@10 against exact search of an HNSW index after 20 % of its items are deleted and 20 %
   added: before the rebuild (deleted rows filtered in the search, added ones searched
   exactly) and after it (goal >= 0.95).

    python -m bench.live [--items 100000] [--duration 10] [--clients 2]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.common import report
from bench.loadgen import load, request_bytes
from bench.serve import embedding_like, make_bundle, process_cpu_s, raw_forward, start_api
from live.index import LiveIndex
from trainer import index as faiss_index
from trainer.bundle import set_current

ADMIN = {"Authorization": "Bearer bench-admin-key-0123456789"}
BATCH = 64


def pngs(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


class Adder:
    """Clients sending POST /items of BATCH images back to back, with fresh ids."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.clients = url, clients
        self.images = pngs(BATCH, 0)
        self.added = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._n = 0

    def _next_prefix(self) -> str:
        with self._lock:
            self._n += 1
            return f"bench/{self._n:07d}/"

    def run(self, seconds: float) -> float:
        """Images added per second over `seconds`."""
        stop = time.perf_counter() + seconds
        start_count = self.added

        def client() -> None:
            with httpx.Client(base_url=self.url, timeout=120, headers=ADMIN) as c:
                while time.perf_counter() < stop:
                    files = [("files", (f"{i:02d}.png", data, "image/png"))
                             for i, data in enumerate(self.images)]
                    r = c.post("/items", files=files, data={"prefix": self._next_prefix()})
                    with self._lock:
                        if r.status_code == 201:
                            self.added += BATCH
                        else:
                            self.errors += 1

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(self.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return (self.added - start_count) / (time.perf_counter() - t0)


def recall_after_changes(n: int, seed: int = 0) -> dict:
    x = embedding_like(int(n * 1.2), seed=seed)
    base, extra = x[:n], x[n:]
    ids = [f"i{r}" for r in range(len(x))]
    t0 = time.perf_counter()
    built = faiss_index.build(base, "hnsw")
    live = LiveIndex(built, base, ids[:n], np.full(n, -1), [])
    out = {"items": n, "build_s": round(time.perf_counter() - t0, 1),
           "recall_at_10_built": built.recall_at_10, "efSearch": built.params["efSearch"]}
    rng = np.random.default_rng(seed)
    live.delete([ids[r] for r in rng.choice(n, size=n // 5, replace=False)])
    live.upsert(ids[n:], extra, [None] * len(extra))
    out["recall_at_10_before_rebuild"] = round(live.recall_at_10(1000), 4)
    t0 = time.perf_counter()
    live.rebuild("hnsw")
    out["rebuild_s"] = round(time.perf_counter() - t0, 1)
    out["recall_at_10_after_rebuild"] = round(live.recall_at_10(1000), 4)
    out["efSearch_after_rebuild"] = live.describe()["params"]["efSearch"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--backbone", default="resnet18_cifar")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    results: dict = {"backbone": args.backbone, "batch": BATCH}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        models, work = tmp_path / "models", tmp_path / "work"
        version = "v-live"
        make_bundle(models, work, version, args.items, "flat", args.backbone)
        set_current(models, version)
        # The bundle's dataset, as a folder: added images are stored in it.
        (tmp_path / "data" / f"synthetic-{args.items}").mkdir(parents=True)
        raw = raw_forward(models, version, BATCH)
        results["raw_forward_images_per_s"] = round(raw, 1)
        print(f"raw batched forward (batch {BATCH}): {raw:.1f} img/s", flush=True)
        proc = start_api(models, tmp_path, args.port)
        url = f"http://127.0.0.1:{args.port}"
        try:
            adder = Adder(url, args.clients)
            adder.run(2)  # warm-up
            cpu0 = process_cpu_s(proc.pid)
            rate = adder.run(args.duration)
            results["add"] = {
                "clients": args.clients, "images_per_s": round(rate, 1),
                "ratio_to_raw": round(rate / raw, 3), "errors": adder.errors,
                "server_cpu_share": round((process_cpu_s(proc.pid) - cpu0) / args.duration, 2)}
            print(f"add {results['add']}", flush=True)

            host = f"127.0.0.1:{args.port}"
            rng = np.random.default_rng(1)
            requests = [request_bytes("GET", f"/neighbours/item/{i:07d}.jpg?k=10", host)
                        for i in rng.integers(0, args.items, 10_000)]
            counter = iter(range(10**9))

            def neighbours() -> bytes:
                return requests[next(counter) % len(requests)]

            load("127.0.0.1", args.port, 1, 2, neighbours)
            idle = load("127.0.0.1", args.port, 1, args.duration, neighbours)
            background = threading.Thread(target=adder.run, args=(args.duration + 2,))
            background.start()
            time.sleep(1)
            busy = load("127.0.0.1", args.port, 1, args.duration, neighbours)
            background.join()
            results["neighbours"] = {"items": args.items, "idle": idle, "while_adding": busy,
                                     "p99_ratio": round(busy["p99_ms"] / idle["p99_ms"], 2),
                                     "live_items": httpx.get(f"{url}/models/{version}/items",
                                                             params={"limit": 1}).json()[
                                         "count"]}
            print(f"neighbours {results['neighbours']}", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    results["recall"] = recall_after_changes(args.items)
    print(f"recall {results['recall']}", flush=True)
    report("live", results, args.out)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
