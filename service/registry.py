"""Loaded model bundles and the hot swap.

One registry per collection (service/collections.py). A background thread watches the
collection's CURRENT (trainer/current.py). When it names a new version, that bundle is loaded
beside the serving one and a single reference is swapped. A request takes the reference once
and uses that bundle for everything it does, so no request fails during a swap and none mixes
two versions.

Requests may also pin another version. Reading a loaded version takes no lock: the current
model is one reference and the cache of other versions a dict that is replaced, never changed
in place. Only the current version follows the change log on the watch thread; an older one
catches up when a request names it, on the low-priority lane (service/catch_up.py). Every
load runs on one loader thread, never on the event loop; a request that needs a version being
loaded awaits that same load. The cache keeps MODEL_CACHE_SIZE versions besides
the current one (least recently used dropped first), pinned loads are limited to
MODEL_LOADS_PER_MIN (bursts of 2), and a bundle that fails to load is not tried again before a
back-off (1 s doubling to 60 s) has passed, however many requests ask for it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from live.index import LiveIndex
from service.batcher import BULK_NICE
from service.catch_up import CatchUpLane, SerialThread
from service.live_view import LiveView
from service.load_throttle import LoadThrottle
from service.memory_budget import bundle_bytes
from service.orphans import OrphanSweeper
from state.changes import ChangeLog
from trainer.bundle import Bundle, current_version
from trainer.current import dataset_of
from trainer.errors import BundleError

log = logging.getLogger(__name__)
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
LOAD_BURST = 2


class Served:
    """A bundle and its live view: the collection as the change log has changed it since the
    bundle was published (service/live_view.py). Searches go through `index`."""

    def __init__(self, bundle: Bundle, changes: ChangeLog | None = None,
                 dataset_root: Path | None = None) -> None:
        self.bundle = bundle
        self.version = bundle.version
        self.live = LiveView(bundle, changes, dataset_root)
        self.bundle_bytes = bundle_bytes(bundle)  # as loaded (service/memory_budget.py)

    @property
    def nbytes(self) -> int:
        """The bundle as loaded and what live adds and rebuilds have grown it by."""
        return self.bundle_bytes + self.live.index.grown_bytes

    @property
    def index(self) -> LiveIndex:
        return self.live.index


class NoModel(LookupError):
    """Nothing to serve yet (none published, or the current one cannot be loaded)."""


class UnknownVersion(LookupError):
    pass


class BrokenVersion(RuntimeError):
    """A published version that failed to load; the reason is in the log only."""

    def __init__(self, version: str, retry_in_s: float) -> None:
        super().__init__(f"model {version} cannot be loaded (the API log says why); next try "
                         f"in {max(1, round(retry_in_s))} s")
        self.version, self.retry_in_s = version, retry_in_s


class TooManyLoads(RuntimeError):
    def __init__(self, retry_in_s: float) -> None:
        super().__init__("too many model versions are being loaded; retry shortly")
        self.retry_in_s = retry_in_s


class ModelRegistry:
    def __init__(self, models_root: Path, device: str = "auto", poll_s: float = 1.0,
                 on_swap: Callable[[str], None] | None = None, cache_size: int = 2,
                 loads_per_min: int = 10,
                 on_load: Callable[[str, bool], None] | None = None,
                 changes: ChangeLog | None = None,
                 dataset_root: Callable[[str], Path | None] | None = None,
                 engine: str = "torch", threads: int = 1,
                 collection: str | None = None,
                 before_load: Callable[[str], None] | None = None) -> None:
        self.models_root = Path(models_root)
        # Called on the loader thread before a version loads (the memory budget makes room).
        self.before_load = before_load or (lambda version: None)
        # The dataset whose CURRENT this registry follows and whose versions it serves (None:
        # the only collection, as a single-model service had).
        self.collection = collection
        self.engine, self.threads = engine, threads  # what runs the encoders (trainer.engines)
        self.changes = changes
        self.dataset_root = dataset_root or (lambda name: None)
        self._rebuilds: dict[str, threading.Thread] = {}
        self.device = device
        self.poll_s = poll_s
        self.on_swap = on_swap or (lambda version: None)
        self.on_load = on_load or (lambda version, ok: None)
        self.cache_size = cache_size
        self.current: Served | None = None
        self.last_error: str | None = None  # says which version failed, never where or why
        self._cached: dict[str, Served] = {}  # replaced whole under _lock, read without it
        self._used: dict[str, float] = {}
        self._broken: dict[str, tuple[float, int]] = {}  # version -> (next try, failures)
        self._inflight: dict[tuple[str, bool], Future[Served]] = {}
        self._throttle = LoadThrottle(loads_per_min, LOAD_BURST)
        self._lock = threading.Lock()  # guards the bookkeeping above; never held while loading
        self._loader = SerialThread("model-load")
        self._lane = CatchUpLane(poll_s, BULK_NICE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._orphans = OrphanSweeper(self.models_root)

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, load_now: bool = True) -> None:
        """`load_now`: load the current version before returning (blocking; at start-up). A
        registry made on first use leaves it to the request, which loads off the event loop."""
        if load_now:
            self.refresh()
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="model-watch",
                                            daemon=True)
            self._thread.start()

    def stop(self, wait: bool = True) -> None:
        self._stop.set()
        if wait and self._thread is not None:
            self._thread.join(timeout=5)

    def unload(self) -> None:
        """Stop watching and drop every loaded version (the memory budget's unload). A request
        holding one keeps it until it answers; the loader and catch-up threads, idle, end on
        their own (service/catch_up.py)."""
        self.stop(wait=False)
        with self._lock:
            self.current = None
            self._cached = {}
            self._used.clear()

    def drop_cached(self) -> int:
        """Forget the versions kept beside the current one (requests holding one keep it):
        the memory budget's first resort. The bytes they held."""
        with self._lock:
            dropped, self._cached = self._cached, {}
            self._used.clear()  # it times the kept versions only
        return sum(s.nbytes for s in dropped.values())

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # keep serving the old model whatever happens
                log.exception("checking for a new model failed")
            self.sync_views()
            self._orphans.maybe_sweep(s.live for s in [self.current, *self._cached.values()]
                                      if s is not None)

    def sync_views(self) -> None:
        """Apply the change log's new entries to the current version, and compact its index
        once its changes pass their threshold (on a thread of its own: polling goes on). Older
        versions catch up when a request names them (get)."""
        served = self.current
        if served is None:
            return
        try:
            served.live.catch_up()
        except Exception:  # a store blip: the next poll tries again
            log.exception("applying changes to model %s failed", served.version)
            return
        running = self._rebuilds.get(served.version)
        if served.index.rebuild_due() and (running is None or not running.is_alive()):
            thread = threading.Thread(target=self._rebuild, args=(served,),
                                      name=f"rebuild-{served.version}", daemon=True)
            self._rebuilds[served.version] = thread
            thread.start()

    @staticmethod
    def _rebuild(served: Served) -> None:
        try:
            served.live.rebuild_if_due()
        except Exception:
            log.exception("rebuilding the index of model %s failed", served.version)

    # --- reading (any thread or the event loop; no lock, no I/O) ---------------------------
    def peek(self, version: str | None = None) -> Served | None:
        """The current model, or a loaded pinned version; None when it is not loaded."""
        current = self.current
        if version is None or (current is not None and current.version == version):
            return current
        served = self._cached.get(version)
        if served is not None:
            self._used[version] = time.monotonic()
        return served

    async def get(self, version: str | None = None) -> Served:
        """The bundle a request uses: loaded already, or loaded now off the event loop; an
        older version caught up with the log first (service/catch_up.py)."""
        served = self.peek(version)
        if served is None:
            served = await asyncio.wrap_future(self._current_future() if version is None
                                               else self._pinned_future(version))
        if served is not self.current:
            await self._lane.caught_up(served.live)
        return served

    async def caught_up(self, served: Served) -> None:
        """Return once `served` has applied every entry appended so far (after a write made
        through it): the current version at once, an older one on the low-priority lane."""
        if served is self.current:
            await asyncio.to_thread(served.live.catch_up)
        else:
            await self._lane.caught_up(served.live, force=True)

    # --- loading (the loader thread) -------------------------------------------------------
    def refresh(self, force: bool = False) -> str | None:
        """Load and swap in the version CURRENT names, if it changed (blocking: not for the
        event loop). A version that failed lately is left alone unless `force`."""
        try:
            self._current_future(force).result()
        except NoModel:
            pass
        except Exception:  # already logged by the loader; the old model keeps serving
            pass
        current = self.current
        return current.version if current else None

    def _current_future(self, force: bool = False) -> Future[Served]:
        try:
            wanted = current_version(self.models_root, self.collection)
        except BundleError as exc:  # several collections, and this registry names none
            return _failed(NoModel(str(exc)))
        current = self.current
        if wanted is None:
            return _failed(NoModel("no model has been published yet"))
        if current is not None and current.version == wanted:
            return _done(current)
        if not force:
            wait = self._backoff_left(wanted)
            if wait > 0:
                return _failed(BrokenVersion(wanted, wait))
        return self._submit(wanted, make_current=True)

    def _pinned_future(self, version: str) -> Future[Served]:
        try:
            published = (self.models_root / version / "manifest.json").is_file()
        except (OSError, ValueError):  # a name the file system cannot hold
            published = False
        if published and self.collection:  # the empty registry pins any version, as before
            try:
                published = dataset_of(self.models_root, version) == self.collection
            except BundleError:
                published = False
        if not published:
            return _failed(UnknownVersion(f"no model version {version!r}"))
        wait = self._backoff_left(version)
        if wait > 0:
            return _failed(BrokenVersion(version, wait))
        with self._lock:
            running = self._inflight.get((version, False))
            if running is not None and not running.done():
                return running
            wait = self._throttle.take()
        if wait > 0:
            return _failed(TooManyLoads(wait))
        return self._submit(version, make_current=False)

    def _submit(self, version: str, make_current: bool) -> Future[Served]:
        key = (version, make_current)
        with self._lock:
            running = self._inflight.get(key)
            if running is None or running.done():
                task = self._make_current if make_current else self._load_pinned
                running = self._loader.submit(task, version)
                self._inflight[key] = running
            return running

    def _backoff_left(self, version: str) -> float:
        entry = self._broken.get(version)
        return 0.0 if entry is None else entry[0] - time.monotonic()

    def _load(self, version: str, current: bool) -> Served:
        try:
            self.before_load(version)
            bundle = Bundle.load(self.models_root, version, device=self.device,
                                 engine=self.engine, threads=self.threads)
            served = Served(bundle, self.changes,
                            self.dataset_root(str(bundle.manifest.get("dataset") or "")))
            if current:
                # Served only once every change made since it was published is applied: after
                # a swap nothing added is missing and nothing deleted is back.
                served.live.catch_up()
        except Exception as exc:
            failures = self._broken.get(version, (0.0, 0))[1] + 1
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 1))
            self._broken[version] = (time.monotonic() + delay, failures)
            log.error("cannot load model %s (next try in %.0f s): %s", version, delay, exc)
            self.on_load(version, False)
            raise BrokenVersion(version, delay) from None
        self._broken.pop(version, None)
        self.on_load(version, True)
        return served

    def _make_current(self, version: str) -> Served:
        current = self.current
        if current is not None and current.version == version:
            return current
        served = self._cached.get(version)
        if served is None:
            try:
                served = self._load(version, current=True)
            except BrokenVersion:
                # A bad bundle never replaces a good one.
                self.last_error = f"model {version} cannot be loaded"
                raise
        else:
            served.live.catch_up()  # it stopped following the log when it stopped being current
        with self._lock:
            previous = self.current
            self.current = served  # the swap: one reference assignment
            cache = {v: s for v, s in self._cached.items() if v != version}
            if previous is not None:
                cache[previous.version] = previous
                self._used[previous.version] = time.monotonic()
            self._cached = self._trim(cache)
        self.last_error = None
        log.info("serving model %s", version)
        self.on_swap(version)
        return served

    def _load_pinned(self, version: str) -> Served:
        served = self.peek(version)
        if served is not None:
            return served
        served = self._load(version, current=False)
        with self._lock:
            self._used[version] = time.monotonic()
            self._cached = self._trim({**self._cached, version: served})
        return served

    def _trim(self, cache: dict[str, Served]) -> dict[str, Served]:
        """At most cache_size versions, the least recently used dropped (lock held)."""
        keep = sorted(cache, key=lambda v: self._used.get(v, 0.0), reverse=True)
        keep = keep[:self.cache_size]
        for version in set(self._used) - set(keep):
            self._used.pop(version, None)
        return {v: cache[v] for v in keep}

    @property
    def loaded_bytes(self) -> int:
        current = self.current
        return sum(s.nbytes for s in [current, *self._cached.values()] if s is not None)

    @property
    def loaded_versions(self) -> list[str]:
        current = self.current
        return ([current.version] if current else []) + list(self._cached)


def _done(value: Served) -> Future[Served]:
    future: Future[Served] = Future()
    future.set_result(value)
    return future


def _failed(exc: Exception) -> Future[Served]:
    future: Future[Served] = Future()
    future.set_exception(exc)
    return future
