"""Where a request's server CPU goes: py-spy samples of the API process during a load, split
by what each sample was doing.

`record(pid, seconds, out)` runs `py-spy record` twice on the same load window's halves: once
for a flame graph (SVG, kept in bench/results/) and once for raw stacks, which `split` sorts
into the parts below. A sample is one thread on a CPU for 1/RATE s (py-spy leaves out idle
threads), so a part's samples over the requests served in the window give its CPU time per
request. A sample belongs to the first part, in this order, that one of its frames names.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

RATE = 250  # samples per second per thread

# (part, substrings of a frame that put a sample in it), checked in this order.
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("forward", ("EmbedBatcher._forward", "embed_uint8")),
    ("search", ("LiveIndex.search", "SearchIndex.search", "neighbours_of")),
    ("image decode", ("QueryDecoder.decode",)),
    ("multipart", ("read_form", "Request._get_form", "MultiPartParser")),
    ("JSON answer", ("serialize_response", "Response.__call__", "JSONResponse", "dump_json",
                     "model_dump", "Response.__init__", "render (")),
    ("dependencies", ("solve_dependencies",)),
    ("routing", ("matches (", "_match (")),
    ("batch queue", ("EmbedBatcher", "call_soon_threadsafe")),
    ("thread hops", ("run_in_threadpool", "run_sync_in_worker_thread", "to_thread")),
    ("HTTP parse and send", ("data_received", "RequestResponseCycle.send",
                             "RequestResponseCycle.receive", "httptools")),
    ("middleware and framework", ("run_asgi",)),
]


def binary() -> str | None:
    """py-spy on PATH, or beside this interpreter (a virtual environment not activated)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def record(pid: int, seconds: float, out: Path, fmt: str) -> subprocess.Popen:
    """Start sampling `pid` for `seconds` into `out` (`fmt`: flamegraph or raw)."""
    spy = binary()
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--output", str(out), "--format", fmt,
         "--duration", str(max(1, round(seconds))), "--rate", str(RATE), "--threads",
         "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def part_of(stack: str) -> str:
    for part, marks in PARTS:
        if any(mark in stack for mark in marks):
            return part
    return "other (event loop, GC, logging)"


def split(raw: Path, requests: float) -> dict[str, float]:
    """CPU ms per request of each part, from a raw py-spy file covering `requests` requests."""
    samples: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples[part_of(stack)] += int(count)
    ms = {part: 1000 * n / RATE / max(requests, 1) for part, n in samples.most_common()}
    return {part: round(v, 3) for part, v in ms.items()} | {"total": round(sum(ms.values()), 3)}
