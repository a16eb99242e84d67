"""What an API says of its collections' memory, read the way a client reads it (a TestClient or
an httpx client over a real process)."""

from __future__ import annotations

from typing import Any


def loaded(c: Any) -> dict[str, bool]:
    """Each collection: whether its model is loaded (GET /collections)."""
    return {d["name"]: d["loaded"] for d in c.get("/collections").json()["data"]}


def unloads(c: Any, name: str) -> float:
    """How many times the memory budget has unloaded collection `name` (GET /metrics)."""
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(f'and_collection_unloads_total{{collection="{name}"}}'):
            return float(line.split()[-1])
    return 0.0
