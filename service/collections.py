"""The collections one API serves: one model registry per collection, and the rule that picks
the collection of a request.

A collection is a dataset and what serves it (trainer/current.py keeps its current version).
Its registry is made on first use and loads off the event loop, as every load does
(service/registry.py); each one watches its own CURRENT, so promoting, swapping or adding
items in one collection leaves the others alone.

The rule (`resolve`): a route under `/collections/{collection}` serves that collection (404
when nothing of its dataset is published; with candidates only, its models are listed and a
pinned version serves); a route at the root serves the default one:
DEFAULT_COLLECTION when set, else the only collection; with several and no default, a 409
that names them. With none at all, the root routes answer as a service with nothing published
(503), through a registry that follows no collection.

Within a memory budget (SERVE_MEMORY_MB; service/memory_budget.py has the rule), start-up loads
collections (the default first) only while they fit; the others load on their first request.
A load that would take the total over the budget first unloads the least recently used
collections that no request holds (`using`), and so does a request after which the loaded
total (grown by live adds) is over it. Older versions kept beside the current ones (the one a
swap replaced, pinned ones) are dropped before any whole collection; an unloaded one is
forgotten, its watch thread stopped, and made again, loading, on its next request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from service.errors import ProblemError, not_found
from service.memory_budget import Loaded, disk_bytes, fits, to_unload
from service.registry import ModelRegistry, Served
from trainer.bundle import current_version
from trainer.current import collections, migrate, register_published

log = logging.getLogger(__name__)

NO_COLLECTION = ""  # what the empty registry follows: no pointer ever names it


class Collections:
    def __init__(self, models_root: Path, make: Callable[[str], ModelRegistry],
                 default: str | None = None, rescan_s: float = 1.0,
                 budget: int | None = None,
                 on_unload: Callable[[str], None] | None = None) -> None:
        self.models_root = Path(models_root)
        self.make = make  # collection -> its registry, not started
        self.default = default
        self.rescan_s = rescan_s
        self.budget = budget  # bytes of loaded models; None: no budget
        self.on_unload = on_unload or (lambda name: None)
        self._registries: dict[str, ModelRegistry] = {}
        self._last_used: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}
        self._budget_lock = threading.Lock()  # one load makes room at a time
        self._lock = threading.Lock()
        # Scanned names (with candidate-only collections or not) and when they were scanned.
        self._scans: dict[bool, tuple[list[str], float]] = {}
        self._started = False
        self.empty = make(NO_COLLECTION)

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Migrate a single-CURRENT models folder, then load the collections' current
        versions that fit the budget, the default first (blocking: start-up only)."""
        migrate(self.models_root)
        register_published(self.models_root)
        self._started = True
        names = self.names(fresh=True)
        default = self.default_name()
        loaded: dict[str, int] = {}
        for name in sorted(names, key=lambda n: (n != default, n)):
            size = self._predicted(name)
            if not fits(loaded, size, self.budget):
                continue
            loaded[name] = self.registry(name, load_now=True).loaded_bytes or size

    def stop(self) -> None:
        self._started = False
        with self._lock:
            registries = list(self._registries.values())
        for registry in registries:
            registry.stop()

    # --- which collections there are -------------------------------------------------------
    def names(self, fresh: bool = False) -> list[str]:
        """The collections with a current version (rescanned at most every `rescan_s`)."""
        return self._scan(False, fresh)

    def published(self, fresh: bool = False) -> list[str]:
        """Every collection with a published version, current or not (trainer.current's
        register), rescanned at most every `rescan_s` unless `fresh`."""
        return self._scan(True, fresh)

    def _scan(self, published: bool, fresh: bool) -> list[str]:
        names, scanned = self._scans.get(published, ([], float("-inf")))
        now = time.monotonic()
        if fresh or now - scanned >= self.rescan_s:
            names = collections(self.models_root, published=published)
            self._scans[published] = (names, now)
        return names

    def exists(self, name: str) -> bool:
        return (name in self._registries or name in self.published()
                or name in self.published(True))

    def resolve(self, name: str | None) -> str | None:
        """The collection a request serves: `name` (from its path), else the default; None
        when nothing at all is published."""
        if name is not None:
            if not self.exists(name):
                raise not_found(f"no collection {name!r}")
            return name
        if self.default:
            return self.default
        names = self.names()
        if len(names) > 1:
            raise ProblemError(
                409, "Conflict", f"this service has several collections ({', '.join(names)}) "
                "and no DEFAULT_COLLECTION: use /collections/{name}/...",
                errors=[{"collection": n} for n in names])
        return names[0] if names else None

    # --- registries ------------------------------------------------------------------------
    def registry(self, name: str | None, load_now: bool = False) -> ModelRegistry:
        """The registry of collection `name` (None: the empty one), made on first use."""
        if name is None:
            return self.empty
        registry = self._registries.get(name)
        if registry is not None:
            return registry
        with self._lock:
            registry = self._registries.get(name)
            if registry is None:
                registry = self.make(name)
                registry.before_load = partial(self._make_room, name)
                if self._started:
                    registry.start(load_now=False)
                self._registries = {**self._registries, name: registry}
        if load_now:  # outside the lock: making room for the load takes it
            registry.refresh()
        return registry

    @contextmanager
    def using(self, name: str | None) -> Iterator[ModelRegistry]:
        """The registry of `name`, held for one request: the memory budget never unloads a
        collection while a request uses it."""
        if name is None:
            yield self.empty
            return
        with self._lock:
            self._in_flight[name] = self._in_flight.get(name, 0) + 1
            self._last_used[name] = time.monotonic()
        try:
            yield self.registry(name)
        finally:
            with self._lock:
                self._in_flight[name] -= 1
                self._last_used[name] = time.monotonic()
            if self.budget is not None:
                self._trim(name)

    # --- the memory budget -----------------------------------------------------------------
    def _predicted(self, name: str) -> int:
        """A collection's size before it loads: its current version's files on disk."""
        try:
            version = current_version(self.models_root, name)
        except Exception:  # an unreadable pointer: the load says why
            version = None
        return disk_bytes(self.models_root, version) if version else 0

    def _make_room(self, name: str, version: str) -> None:
        """Before collection `name` loads `version` (on its loader thread): unload the least
        recently used idle collections until it fits."""
        if self.budget is None:
            return
        try:
            with self._budget_lock:
                self._unload_for(name, disk_bytes(self.models_root, version))
        except Exception:  # never fail a load over the budget's bookkeeping
            log.exception("making room for collection %s failed", name)

    def _trim(self, name: str) -> None:
        """After a request to `name`: when what is loaded has grown past the budget (live
        adds, a rebuilt index), unload the least recently used idle collections (never `name`;
        a budget check in progress elsewhere is left to finish). Cheap: a sum of sizes."""
        if sum(self.loaded_bytes().values()) <= (self.budget or 0):
            return
        if not self._budget_lock.acquire(blocking=False):
            return
        try:
            self._unload_for(name, 0)
        except Exception:  # never fail a request over the budget's bookkeeping
            log.exception("keeping collections within the budget after %s failed", name)
        finally:
            self._budget_lock.release()

    def _unload_for(self, name: str, incoming: int) -> None:
        """Make room for `incoming` bytes: first the older versions kept beside current ones
        (a swap keeps the replaced version; pinned requests load others), least recently used
        collection first, then whole idle collections."""
        registries = self._registries
        total = sum(r.loaded_bytes for r in registries.values()) + incoming
        for n in sorted(registries, key=lambda n: self._last_used.get(n, 0.0)):
            if self.budget is None or total <= self.budget:
                break
            total -= registries[n].drop_cached()
        with self._lock:
            entries = [Loaded(n, r.loaded_bytes, self._last_used.get(n, 0.0),
                              self._in_flight.get(n, 0))
                       for n, r in self._registries.items()]
        for victim in to_unload(entries, incoming, self.budget, keep=name):
            self.unload(victim)

    def unload(self, name: str) -> bool:
        """Forget collection `name`'s registry unless a request holds it; it loads again on
        its next request."""
        with self._lock:
            registry = self._registries.get(name)
            if registry is None or self._in_flight.get(name, 0) > 0:
                return False
            freed = registry.loaded_bytes
            self._registries = {n: r for n, r in self._registries.items() if n != name}
        registry.unload()
        log.info("unloaded collection %s (%d bytes) to stay within the memory budget",
                 name, freed)
        self.on_unload(name)
        return True

    def loaded_bytes(self) -> dict[str, int]:
        """Each made registry's loaded models, in bytes."""
        return {name: r.loaded_bytes for name, r in self._registries.items()}

    def loaded(self) -> dict[str, Served | None]:
        """Each made registry's current model (None: not loaded)."""
        return {name: r.current for name, r in self._registries.items()}

    def default_name(self) -> str | None:
        """The default collection; None when there is none, or several and no default."""
        try:
            return self.resolve(None)
        except ProblemError:
            return None

    def default_current(self) -> Served | None:
        """The default collection's current model, when there is one and it is loaded."""
        name = self.default_name()
        registry = self._registries.get(name) if name is not None else None
        return registry.current if registry is not None else None
