"""Memory and time of one large image on its way to the model's input:

    python -m bench.large_images [--width 5712 --height 4284] [--size 32 224] [--out FILE]

A phone's 24-megapixel photo (5712 x 4284, an iPhone's default HEIC) in every format a query or
a dataset may use, each decoded by `trainer.images.decode_square` in a fresh process: the peak
memory it added (resident set), per decoded pixel, and the time. The query limit
(MAX_QUERY_PIXELS) times the largest of these figures is what one decode may hold.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import report
from trainer.images import AVIF, HEIF

# Decoded in a fresh interpreter so that one image's peak is not hidden by an earlier one's.
# The peak is the address space's high-water mark (VmHWM), which starts afresh at exec (a
# child's ru_maxrss would start at its parent's).
_MEASURE = """
import json, sys, time
from trainer.images import decode_square

def peak_kb():
    line = [x for x in open("/proc/self/status") if x.startswith("VmHWM:")][0]
    return int(line.split()[1])

data = open(sys.argv[1], "rb").read()
before = peak_kb()
start = time.perf_counter()
decode_square(data, int(sys.argv[2]))
took = time.perf_counter() - start
print(json.dumps({"peak_mb": (peak_kb() - before) / 1024, "seconds": took}))
"""


def photo_like(width: int, height: int) -> Image.Image:
    """Smooth colour fields with alpha (noise upsampled 16 x): compresses like a photo."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (height // 16, width // 16, 4), dtype=np.uint8)
    return Image.fromarray(coarse, "RGBA").resize((width, height), Image.Resampling.BILINEAR)


def variants(image: Image.Image) -> dict[str, tuple[Image.Image, str, dict]]:
    rgb = image.convert("RGB")
    out = {
        "JPEG": (rgb, "JPEG", {"quality": 90}),
        "PNG RGB": (rgb, "PNG", {}),
        "PNG RGBA": (image, "PNG", {}),
        "PNG greyscale": (image.convert("L"), "PNG", {}),
        "PNG palette": (rgb.convert("P"), "PNG", {}),
        "PNG 16-bit greyscale": (image.convert("I;16"), "PNG", {}),
        "TIFF RGB": (rgb, "TIFF", {}),
        "WebP": (rgb, "WEBP", {"quality": 90}),
    }
    if HEIF:
        out["HEIC"] = (rgb, "HEIF", {"quality": 80})
    if AVIF:
        out["AVIF"] = (rgb, "AVIF", {"quality": 80})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=5712)
    p.add_argument("--height", type=int, default=4284)
    p.add_argument("--size", type=int, nargs="+", default=[32, 224])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    pixels = args.width * args.height
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (image, fmt, options) in variants(photo_like(args.width, args.height)).items():
            path = Path(tmp) / "image"
            buf = io.BytesIO()
            image.save(buf, fmt, **options)
            path.write_bytes(buf.getvalue())
            for size in args.size:
                r = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(size)],
                                   capture_output=True, text=True, check=True)
                figures = json.loads(r.stdout)
                row = {"format": name, "file_mb": round(len(buf.getvalue()) / 1e6, 2),
                       "size": size, "peak_mb": round(figures["peak_mb"], 1),
                       "bytes_per_pixel": round(figures["peak_mb"] * 2**20 / pixels, 1),
                       "seconds": round(figures["seconds"], 2)}
                rows.append(row)
                print(f"{name:22} -> {size:3} px: {row['peak_mb']:6.1f} MB "
                      f"({row['bytes_per_pixel']:4.1f} B/px), {row['seconds']:.2f} s",
                      flush=True)
    report("large_images", {"width": args.width, "height": args.height, "rows": rows},
           args.out)


if __name__ == "__main__":
    main()
