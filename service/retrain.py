"""Running the retrain policy (state/retrain.py) of every collection's dataset: a thread of
the API looks every RETRAIN_CHECK_S at how much of the collection changed since the model's
training snapshot, and enqueues a warm-started job when the policy says so.

Several API replicas may look at once: the check and the enqueue happen under a short lease
in the job store, and the policy records the job it started, so one change enqueues one job.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from state.changes import ChangeLog
from state.jobs import JobStore
from state.retrain import Decision, RetrainPolicy, decide
from state.settings import Settings
from trainer.bundle import current_version, read_manifest
from trainer.current import collections
from trainer.errors import BundleError, TrainerError

log = logging.getLogger(__name__)
LOCK_TTL_S = 60.0


@dataclass(frozen=True)
class RetrainStatus:
    policy: RetrainPolicy
    decision: Decision
    version: str | None  # the current model of the dataset (what a retrain starts from)
    manifest: dict[str, Any] | None


def status(settings: Settings, store: JobStore, changes: ChangeLog, dataset: str) -> RetrainStatus:
    policy = RetrainPolicy.from_dict(store.get_policy(dataset))
    version = current_version(settings.models_root, dataset)
    manifest = None
    if version is not None:
        try:
            manifest = read_manifest(settings.models_root, version)
        except BundleError:
            manifest = None
    if manifest is None or manifest.get("dataset") != dataset:
        return RetrainStatus(policy, Decision(False, "no current model of this dataset", 0, 0,
                                              0.0), None, None)
    # Entries after the log position the model was trained on (older bundles: published at),
    # or after the last retrain's start when that is later.
    snapshot = int(manifest.get("snapshot_seq", manifest.get("changes_seq")) or 0)
    changed = max(0, changes.last_seq(dataset) - max(snapshot, policy.last_seq))
    last = store.get(policy.last_job) if policy.last_job else None
    decision = decide(policy, changed, int(manifest.get("item_count") or 0), last)
    return RetrainStatus(policy, decision, version, manifest)


def retrain_config(policy: RetrainPolicy, version: str, manifest: dict[str, Any]) -> dict:
    """The current model's config, with the policy's schedule, warm-started from the model."""
    return {**(manifest.get("config") or {}), **policy.config, "init_from": version}


class RetrainWatcher:
    def __init__(self, settings: Settings, store: JobStore, changes: ChangeLog,
                 submit: Callable[[str, dict[str, Any]], Any], interval_s: float) -> None:
        self.settings, self.store, self.changes = settings, store, changes
        self.submit = submit  # (dataset, config) -> the job, queued with the gate's policy
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="retrain-check", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # a store blip: the next look tries again
                log.exception("the retrain check failed")

    def check(self) -> str | None:
        """Enqueue a retrain of each collection's dataset that is due; returns the last job
        id started."""
        started = None
        for dataset in collections(self.settings.models_root):
            started = self._check(dataset) or started
        return started

    def _check(self, dataset: str) -> str | None:
        if not status(self.settings, self.store, self.changes, dataset).decision.due:
            return None
        lock, owner = f"retrain:{dataset}", secrets.token_hex(8)
        if not self.store.acquire(lock, owner, LOCK_TTL_S):
            return None  # another replica is deciding
        try:
            now = status(self.settings, self.store, self.changes, dataset)  # under the lock
            if not now.decision.due or now.version is None or now.manifest is None:
                return None
            policy = now.policy
            position = self.changes.last_seq(dataset)
            try:
                job = self.submit(dataset, retrain_config(policy, now.version, now.manifest))
            except TrainerError as exc:  # the policy's config no longer fits: say so, back off
                log.warning("retrain of %s not started: %s", dataset, exc)
                policy.last_enqueued_at = time.time()
                policy.last_error = str(exc)
                self.store.put_policy(dataset, policy.to_dict())
                return None
            policy.last_job, policy.last_enqueued_at, policy.last_error = job.id, time.time(), None
            policy.last_seq = position
            self.store.put_policy(dataset, policy.to_dict())
            log.info("retraining %s from %s: %s (job %s)", dataset, now.version,
                     now.decision.reason, job.id)
            return str(job.id)
        finally:
            self.store.release(lock, owner)
