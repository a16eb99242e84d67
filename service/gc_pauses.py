"""Keeping the cycle collector's long pauses off the serving path.

A full (generation 2) collection walks every container object the process holds. Once the API
has started, that is about 420,000 objects (torch, FastAPI, pydantic and the rest of what it
imports), and the walk takes about 150 ms on a 2-core machine, during which the event loop
answers nothing. At 32 clients, one such pause every few seconds put `/embed`'s p99 near 200 ms
against a p50 of 50 ms (docs/benchmarks.md, "Serving: the cost of one request").

What exists when the API starts lives as long as the process, so `gc.freeze()` moves it out of
the collector's sight: a full collection then walks only what came later (0.4 ms measured).
Garbage is collected first, so nothing collectable is frozen. Objects made later (requests,
models loaded afterwards) are collected as before.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> int:
    """Collect, then exempt every object alive now from later collections; how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
