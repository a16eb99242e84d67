"""The demo of `bash deploy/local.sh up`, several times: photo patches written for each seed,
the demo config trained on them (seeded the same), the model's weighted-kNN top-1 on the test
patches beside raw pixels' (the same kNN on downscaled pixels), and the wall time.

    python -m bench.demo [--seeds 0 1 2 3] [--set key=value ...] [--out FILE]
    python -m bench.demo --figure docs/demo-data.jpg      # a picture of the demo data

Wall time counts what a user waits for in the trainer: writing the patches, decoding them,
the pixel baseline, training and evaluation (not the upload, nor building the bundle). Other
processes on the machine stretch it; the load average before and after each run is kept
beside it so a reader can tell.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import report
from trainer.config import TrainConfig
from trainer.data import open_collection
from trainer.engine import Trainer
from trainer.sample_data import DEMO_CONFIG, write_photo_patches


def run(seed: int, overrides: list[str]) -> dict:
    load_before = os.getloadavg()
    t0 = time.time()
    history: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_photo_patches(Path(tmp) / "photo-patches", seed=seed)
        config = TrainConfig.from_strings(overrides, base={**DEMO_CONFIG, "seed": seed})
        result = Trainer(config, open_collection(data), Path(tmp) / "run",
                         on_epoch=history.append).run()
    m = result.metrics
    return {
        "seed": seed, "knn_top1": m["knn_top1"], "pixel_knn_top1": m.get("pixel_knn_top1"),
        "knn_queries": m.get("knn_queries"),
        # kNN top-1 at the end of each round: instance discrimination, then AND's rounds.
        "per_round": [round(r["knn_top1"], 4) for r in history
                      if r["knn_top1"] is not None and r["epoch"] == r["epochs"]],
        "wall_s": round(time.time() - t0, 1), "images_per_s": m.get("images_per_s"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def figure(out: str, seed: int = 0, per_class: int = 12) -> None:
    """A picture of the demo data: the two photos with each class's boxes, then a row of
    patches per class (as written for `seed`)."""
    from PIL import Image, ImageDraw
    from sklearn.datasets import load_sample_images

    from trainer.sample_data import PHOTO_REGIONS

    colours = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0",
               "#f032e6"]
    bundle = load_sample_images()
    photos = {Path(n).stem: Image.fromarray(img).convert("RGB")
              for n, img in zip(bundle.filenames, bundle.images, strict=True)}
    for boxes, colour in zip(PHOTO_REGIONS.values(), colours, strict=False):
        for name, *box in boxes:
            ImageDraw.Draw(photos[name]).rectangle(box, outline=colour, width=3)
    thumb = 64
    photo_w = 480  # each photo scaled to this width (427x640 -> 320x480)
    photo_h = round(427 * photo_w / 640)
    rows = len(PHOTO_REGIONS)
    width = 2 * photo_w + 10
    height = photo_h + 10 + rows * (thumb + 6)
    sheet = Image.new("RGB", (width, height), "white")
    for i, name in enumerate(("china", "flower")):
        sheet.paste(photos[name].resize((photo_w, photo_h)), (i * (photo_w + 10), 0))
    draw = ImageDraw.Draw(sheet)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_photo_patches(Path(tmp) / "pp", per_class=max(per_class * 5 // 4, 5),
                                   seed=seed)
        for r, (label, colour) in enumerate(zip(PHOTO_REGIONS, colours, strict=False)):
            y = photo_h + 10 + r * (thumb + 6)
            draw.rectangle((4, y + 4, 16, y + 16), fill=colour)
            draw.text((22, y + 4), label, fill="black")
            files = sorted((root / "train" / label).iterdir())[:per_class]
            for j, path in enumerate(files):
                with Image.open(path) as img:
                    sheet.paste(img.resize((thumb, thumb), Image.Resampling.NEAREST),
                                (120 + j * (thumb + 6), y))
    sheet.save(out, quality=85)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                   metavar="KEY=VALUE", help="changes to the demo config")
    p.add_argument("--out", default=None, help="also write the JSON report here")
    p.add_argument("--figure", default=None, metavar="IMAGE",
                   help="only draw the demo data (photos with the classes' boxes, patches of "
                   "each class) into this image file, e.g. docs/demo-data.jpg")
    args = p.parse_args()
    if args.figure:
        figure(args.figure, seed=args.seeds[0])
        return
    runs = []
    for seed in args.seeds:
        runs.append(run(seed, args.overrides))
        r = runs[-1]
        print(f"seed {seed}: model kNN top-1 {r['knn_top1']:.4f}, raw pixels "
              f"{r['pixel_knn_top1']:.4f}, per round {r['per_round']}, {r['wall_s']:.0f} s, "
              f"load {r['load_average_before'][0]:.1f} -> {r['load_average_after'][0]:.1f}",
              flush=True)
    model = [r["knn_top1"] for r in runs]
    pixels = [r["pixel_knn_top1"] for r in runs]
    summary = {
        "model_knn_top1_mean": round(statistics.mean(model), 4),
        "model_knn_top1_min": round(min(model), 4), "model_knn_top1_max": round(max(model), 4),
        "pixel_knn_top1_mean": round(statistics.mean(pixels), 4),
        "pixel_knn_top1_min": round(min(pixels), 4), "pixel_knn_top1_max": round(max(pixels), 4),
        "wall_s_mean": round(statistics.mean(r["wall_s"] for r in runs), 1),
    }
    report("demo", {"config": DEMO_CONFIG, "overrides": args.overrides, "summary": summary,
                    "runs": runs}, args.out)


if __name__ == "__main__":
    main()
