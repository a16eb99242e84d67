"""The collections one API serves: one model registry per collection, and the rule that picks
the collection of a request.

A collection is a dataset and what serves it (trainer/current.py keeps its current version).
Its registry is made on first use and loads off the event loop, as every load does
(service/registry.py); each one watches its own CURRENT, so promoting, swapping or adding
items in one collection leaves the others alone.

The rule (`resolve`): a route under `/collections/{collection}` serves that collection (404
when it has no current version); a route at the root serves the default one:
DEFAULT_COLLECTION when set, else the only collection; with several and no default, a 409
that names them. With none at all, the root routes answer as a service with nothing published
(503), through a registry that follows no collection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from service.errors import ProblemError, not_found
from service.registry import ModelRegistry, Served
from trainer.current import collections, migrate

NO_COLLECTION = ""  # what the empty registry follows: no pointer ever names it


class Collections:
    def __init__(self, models_root: Path, make: Callable[[str], ModelRegistry],
                 default: str | None = None, rescan_s: float = 1.0) -> None:
        self.models_root = Path(models_root)
        self.make = make  # collection -> its registry, not started
        self.default = default
        self.rescan_s = rescan_s
        self._registries: dict[str, ModelRegistry] = {}
        self._lock = threading.Lock()
        self._names: list[str] = []
        self._scanned = float("-inf")
        self._started = False
        self.empty = make(NO_COLLECTION)

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Migrate a single-CURRENT models folder, then load every collection's current
        version (blocking: start-up only)."""
        migrate(self.models_root)
        self._started = True
        for name in self.names(fresh=True):
            self.registry(name, load_now=True)

    def stop(self) -> None:
        self._started = False
        with self._lock:
            registries = list(self._registries.values())
        for registry in registries:
            registry.stop()

    # --- which collections there are -------------------------------------------------------
    def names(self, fresh: bool = False) -> list[str]:
        """The collections with a current version (rescanned at most every `rescan_s`)."""
        now = time.monotonic()
        if fresh or now - self._scanned >= self.rescan_s:
            self._names, self._scanned = collections(self.models_root), now
        return self._names

    def exists(self, name: str) -> bool:
        return name in self._registries or name in self.names() or name in self.names(True)

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
                if self._started:
                    registry.start(load_now=load_now)
                self._registries = {**self._registries, name: registry}
        return registry

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
