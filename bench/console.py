"""Console benchmark in headless Chromium (Debian's chromium driven by Playwright), against a
real API process on loopback serving a synthetic 1,000,000-item model built with the real
bundle code (clustered unit vectors, flat index, the 50,000-point embedding map):

1. first load of the console (cold browser cache) until its first page is drawn;
2. Explore on the 1,000,000-item model: until the first page of 48 thumbnails is shown, then
   a jump to the last page, then a first and a second id-prefix filter;
3. the embedding map: until all 50,000 points are drawn (fetch + parse + first frame);
4. frame time while panning the map (one pan step per animation frame).

    python -m bench.console [--items 1000000] [--work DIR] [--out bench/results/console.json]

Goals: Explore under 1 s, the map under 1 s, panning at 60 frames/s. With --work, the bundle
is built once and reused by later runs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image
from playwright.sync_api import sync_playwright

from bench.common import REPO, report
from trainer.backbones import Encoder
from trainer.bundle import set_current, write_bundle
from trainer.config import TrainConfig
from trainer.encoder_file import EncoderMeta, save_encoder

VERSION = "20260101-000000-million"
CLASSES = 20
PAGE = 48
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def clustered(n: int, d: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around CLASSES centres (so the map has structure), and their classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLASSES, d)).astype(np.float32)
    labels = rng.integers(0, CLASSES, n)
    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):
        part = labels[start:start + 100_000]
        x[start:start + len(part)] = centres[part] + 0.8 * rng.normal(
            size=(len(part), d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def item_id(row: int, label: int) -> str:
    return f"train/c{label:02d}/{row:07d}.png"


def build(work: Path, n: int) -> dict:
    """The bundle (once), and image files for the pages the benchmark shows."""
    models, data = work / "models", work / "data" / "synthetic"
    if (models / VERSION / "manifest.json").exists():
        return json.loads((work / "build.json").read_text())
    run = work / "run"
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_encoder(run / "encoder.pt", Encoder("small_cnn", 128),
                 EncoderMeta("small_cnn", 128, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    (run / "config.json").write_text(json.dumps(TrainConfig(backbone="small_cnn").to_dict()))
    (run / "metrics.json").write_text("{}")
    vectors, labels = clustered(n)
    ids = np.asarray([item_id(i, int(lab)) for i, lab in enumerate(labels)])
    np.savez(run / "embeddings.npz", vectors=vectors, ids=ids, labels=labels,
             classes=np.asarray([f"c{c:02d}" for c in range(CLASSES)]),
             is_eval=np.zeros(n, bool))
    t0 = time.time()
    write_bundle(run, models, dataset="synthetic", version=VERSION, index_kind="flat")
    built = {"bundle_s": round(time.time() - t0, 1),
             "map_points": json.loads((models / VERSION / "manifest.json").read_text())[
                 "map_points"]}
    set_current(models, VERSION)
    rng = np.random.default_rng(1)
    last = (n - 1) // PAGE * PAGE
    for row in [*range(PAGE), *range(last, n)]:
        path = data / item_id(row, int(labels[row]))
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
        path.write_bytes(buf.getvalue())
    (work / "build.json").write_text(json.dumps(built))
    return built


def start_api(work: Path, port: int) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "MODELS_ROOT": str(work / "models"), "DATA_ROOT": str(work / "data"),
           "STATE_ROOT": str(work / "state")}
    for key in ("BROKER_URL", "ADMIN_API_KEY", "READ_API_KEY"):
        env.pop(key, None)
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "service", "--port", str(port),
                             "--log-level", "warning"], cwd=REPO, env=env)
    for _ in range(1200):
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            if ready.status_code == 200 and ready.json()["checks"]["model"] == VERSION:
                return proc, time.time() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the API did not load the model")


GRID_READY = """([n, first]) => { const lis = document.querySelectorAll('#explore-grid li');
    const imgs = [...document.querySelectorAll('#explore-grid img')];
    return lis.length === n && (!first || lis[0].dataset.id !== first)
        && imgs.every(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 1); }"""


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return round((time.perf_counter() - t0) * 1000, 1)


def browse(base: str, n: int) -> dict:
    out: dict = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        sizes: list[int] = []
        page.on("response", lambda r: sizes.append(int(r.headers.get("content-length", 0))))
        out["first_load_ms"] = timed(lambda: (
            page.goto(f"{base}/#/models"),
            page.wait_for_selector("#models-table")))
        out["first_load_requests"] = len(sizes)
        out["first_load_kb"] = round(sum(sizes) / 1024, 1)

        page.goto(f"{base}/#/datasets")
        page.wait_for_load_state("networkidle")
        out["explore_first_page_ms"] = timed(lambda: (
            page.evaluate("location.hash = '#/explore'"),
            page.wait_for_function(GRID_READY, arg=[PAGE, None], timeout=60_000)))
        first = page.locator("#explore-grid li").first.get_attribute("data-id")
        last_page = (n - 1) // PAGE + 1
        out["explore_last_page_ms"] = timed(lambda: (
            page.fill("#explore-page", str(last_page)), page.press("#explore-page", "Enter"),
            page.wait_for_function(GRID_READY, arg=[n - (last_page - 1) * PAGE, first],
                                   timeout=60_000)))
        for name, prefix in (("explore_prefix_first_ms", "train/c07/"),
                             ("explore_prefix_again_ms", "train/c03/")):
            out[name] = timed(lambda p=prefix: (
                page.fill("#explore-prefix", p), page.press("#explore-prefix", "Enter"),
                page.wait_for_function(f"""() => document.querySelector('#explore-count')
                    .textContent.includes('match') && document.querySelector('#explore-grid li')
                    ?.dataset.id?.startsWith('{p}')""", timeout=120_000)))

        page.goto(f"{base}/#/datasets")
        page.wait_for_load_state("networkidle")
        out["map_ms"] = timed(lambda: (
            page.evaluate("location.hash = '#/map'"),
            page.wait_for_function("() => Number(document.querySelector('#map-canvas')"
                                   "?.dataset.points) > 0", timeout=60_000)))
        out["map_points_drawn"] = int(page.locator("#map-canvas").get_attribute("data-points"))
        stats = page.evaluate("window.__mapStats")
        out["map_fetch_ms"] = round(stats["fetchMs"], 1)
        out["map_first_draw_ms"] = round(stats["drawMs"][0], 1)
        frames = page.evaluate("""() => new Promise(done => {
            const stamps = [], draws = window.__mapStats.drawMs; const before = draws.length;
            let left = 180;
            const step = (t) => { stamps.push(t); window.__mapPan(3, 2);
                if (--left > 0) requestAnimationFrame(step);
                else requestAnimationFrame(() => done({stamps, draws: draws.slice(before)})); };
            requestAnimationFrame(step); })""")
        gaps = np.diff(frames["stamps"])
        draws = frames["draws"]
        out["pan_frames"] = len(draws)
        out["pan_draw_ms_median"] = round(statistics.median(draws), 2)
        out["pan_draw_ms_p95"] = round(float(np.percentile(draws, 95)), 2)
        out["pan_frame_interval_ms_median"] = round(float(np.median(gaps)), 2)
        out["pan_fps"] = round(1000 / float(np.median(gaps)), 1)
        out["chromium"] = browser.version
        browser.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--work", default=None, help="keep the bundle here and reuse it")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        results: dict = {"items": args.items, **build(work, args.items)}
        api, load_s = start_api(work, args.port)
        results["api_model_load_s"] = round(load_s, 1)
        try:
            results |= browse(f"http://127.0.0.1:{args.port}", args.items)
        finally:
            api.terminate()
            api.wait(30)
    report("console", results, args.out)


if __name__ == "__main__":
    main()
