"""The last phase of a job: write its bundle, commit, make it current.

    between phases: a cancel stops the job (canceled, nothing published), a lost lease stops
                    the process (the job is another worker's now)
    gate:           before the bundle is written, the promotion gate judges the model against
                    the current one (worker/gate.py); its verdict goes into the manifest
    commit:         one compare-and-set on the record (with the verdict), while we hold the
                    lease and no cancel is requested; from here on a cancel is refused (409)
    set_current:    only after the commit, so a job canceled before it never becomes current,
                    and only when the verdict says so
    compact:        last, the change log is compacted up to what the bundle and the other
                    jobs no longer need (worker/live.py); a failure there is logged, never the
                    job's: the next publish compacts again

Publishing is idempotent: the version is the job's own (bundle_version), and a valid bundle of
that version already there (an earlier attempt, or a worker that lost the job but finished
first) is kept as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from live.publish import PublishOptions
from state.jobs import RUNNING, Job
from state.settings import Settings
from trainer.bundle import read_manifest, set_current, withdraw, write_bundle
from trainer.errors import BundleError, TrainingStopped
from worker.gate import Rescore, judge
from worker.heartbeat import CANCEL_REASON
from worker.lease import LeaseLost
from worker.recorder import JobRecorder

log = logging.getLogger(__name__)


def bundle_version(job: Job) -> str:
    """One version per job, so publishing again after a crash finds its own bundle."""
    stamp = datetime.fromtimestamp(job.created_at, timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{job.id[:8]}"


def publish(job: Job, run_dir: Path, settings: Settings, recorder: JobRecorder,
            between_phases: Callable[[], None],
            prepare: Callable[[], PublishOptions] | None = None,
            compact: Callable[[], object] | None = None,
            rescore: Rescore | None = None) -> str:
    """Publish the finished run of `job`; returns its version. `prepare()` gives what the
    bundle records of the live collection's changes (live/publish.py), `compact()` compacts
    its change log once the bundle is committed, `rescore` is the gate's (worker/gate.py).
    Raises TrainingStopped (canceled) or LeaseLost."""
    version = bundle_version(job)
    store = recorder.store
    try:
        between_phases()
        written = (settings.models_root / version).exists()
        options = prepare() if prepare is not None and not written else None
        # An earlier attempt's bundle keeps the verdict it was published with.
        gate = (read_manifest(settings.models_root, version).get("gate") if written else
                None) or judge(job, run_dir, settings.models_root, rescore)
        write_bundle(run_dir, settings.models_root, dataset=job.dataset, version=version,
                     extra={"job_id": job.id, "gate": gate,
                            **(options.extra if options else {})},
                     exist_ok=True, check=between_phases,
                     embeddings=options.embeddings if options else None,
                     extra_json=options.extra_json if options else None,
                     map_points=settings.map_points)
        between_phases()
        committed = recorder.retrying(lambda: store.transition(
            job.id, {RUNNING}, RUNNING, owner=recorder.owner, when={"cancel_requested": False},
            committed=True, gate=gate))
        if not committed:
            now = recorder.retrying(lambda: store.require(job.id))
            if now.status == RUNNING and now.cancel_requested and recorder.lease.held():
                raise TrainingStopped(CANCEL_REASON)
            raise LeaseLost(job.id)
    except TrainingStopped:
        # Canceled before the commit: nothing of this job is offered, whichever attempt
        # wrote its bundle.
        try:
            withdraw(settings.models_root, version)
        except BundleError as exc:  # promoted by hand meanwhile: it stays
            log.warning("job %s: %s", job.id, exc)
        raise
    if gate.get("promoted", False):
        set_current(settings.models_root, version)
    else:
        log.info("job %s: model %s published as a candidate, not current: %s", job.id,
                 version, gate.get("reason"))
    if compact is not None:
        try:
            compact()
        except Exception:  # the bundle is published; the log stays as it was
            log.exception("job %s: compacting the change log of %r failed", job.id,
                          job.dataset)
    return version
