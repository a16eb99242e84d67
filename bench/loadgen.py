"""A small closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending
pre-encoded requests back to back. Written on asyncio streams rather than an HTTP client
library so that on a small machine the load generator's own CPU use stays far below the
server's (an httpx client spent more CPU per request than the service's HTTP layer)."""

from __future__ import annotations

import asyncio
import gc
import resource
import statistics
import time
from collections.abc import Callable


def request_bytes(method: str, path: str, host: str, body: bytes = b"",
                  content_type: str | None = None) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    if content_type:
        head.append(f"Content-Type: {content_type}")
    if body or method in ("POST", "PUT"):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _run(host: str, port: int, clients: int, seconds: float,
               next_request: Callable[[], bytes]) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def one_client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                writer.write(next_request())
                status = await _read_response(reader)
                if status == 200:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies, errors, time.perf_counter() - t0


def load(host: str, port: int, clients: int, seconds: float,
         next_request: Callable[[], bytes]) -> dict:
    """Drive the server; report requests/s, latency percentiles and the generator's CPU."""
    # This process imports torch: a full collection would pause it ~150 ms mid-load and
    # count as the server's latency (service/gc_pauses.py).
    gc.collect()
    gc.freeze()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    latencies, errors, elapsed = asyncio.run(_run(host, port, clients, seconds, next_request))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    ms = sorted(x * 1000 for x in latencies)
    return {"clients": clients, "requests_per_s": round(len(ms) / elapsed, 1), "errors": errors,
            "p50_ms": round(statistics.median(ms), 2) if ms else None,
            "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 2) if ms else None,
            "loadgen_cpu_share": round(cpu / elapsed, 3)}
