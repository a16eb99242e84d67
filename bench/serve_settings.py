"""`/embed` at 32 clients under several API settings, the loads interleaved:

    python -m bench.serve_settings --settings '{"default": {}, "wait3": {"EMBED_MAX_WAIT_MS": "3"}}'
                                   [--repeats 3] [--duration 8] [--out FILE]

A 2-core virtual machine's speed moves by 10-20 % from one minute to the next (the raw forward
of one bundle measured 502-628 images/s within an hour on one machine), so one run of each
setting says nothing about a difference of that size: each setting gets a fresh API process in
every round, the rounds repeat, and the raw forward is measured once at the start as the
reference. Figures per load: requests/s, its ratio to the raw forward, p50, p99, the cores
the API process used and its CPU per request.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bench.common import report
from bench.loadgen import load, request_bytes
from bench.serve import (
    cpu_per_request,
    make_bundle,
    png_32,
    process_cpu_s,
    raw_forward,
    start_api,
)
from service.http_calls import FilePart, multipart
from trainer.bundle import set_current


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", required=True,
                   help='JSON: {"name": {"ENV_VAR": "value", ...}, ...}')
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--backbone", default="resnet18_cifar")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    settings: dict[str, dict[str, str]] = json.loads(args.settings)
    results: dict = {"clients": args.clients, "settings": settings, "loads": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        models = tmp_path / "models"
        make_bundle(models, tmp_path / "work", "v1", 1000, "flat", args.backbone)
        set_current(models, "v1")
        raw = results["raw_forward_images_per_s"] = round(raw_forward(models, "v1", 64), 1)
        print(f"raw batched forward (batch 64): {raw} img/s", flush=True)
        body, ctype = multipart([], [FilePart("files", "q.png", png_32(), "image/png")])
        request = request_bytes("POST", "/embed", f"127.0.0.1:{args.port}", body, ctype)
        for round_ in range(args.repeats):
            for name, env in settings.items():
                proc = start_api(models, tmp_path / f"state-{round_}-{name}", args.port,
                                 settings=env)
                try:
                    load("127.0.0.1", args.port, args.clients, 2, lambda: request)  # warm-up
                    cpu0 = process_cpu_s(proc.pid)
                    r = load("127.0.0.1", args.port, args.clients, args.duration,
                             lambda: request)
                    cpu_per_request(r, process_cpu_s(proc.pid) - cpu0, args.duration)
                    r |= {"setting": name, "round": round_,
                          "ratio_to_raw": round(r["requests_per_s"] / raw, 3)}
                    print(f"{name} (round {round_}): {r}", flush=True)
                    results["loads"].append(r)
                finally:
                    proc.terminate()
                    proc.wait(30)
    results["median_ratio"] = {
        name: statistics.median(r["ratio_to_raw"] for r in results["loads"]
                                if r["setting"] == name) for name in settings}
    report("serve_settings", results, args.out)


if __name__ == "__main__":
    main()
