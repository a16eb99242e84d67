"""A dataset's retrain policy: retrain when enough of the collection has changed.

A live collection drifts from the model that serves it: items are added, replaced and deleted
after the model's training snapshot. With a policy on, once the change-log entries since that
snapshot reach `changed_fraction` of the model's items, a job is enqueued: by default a warm
start from the current model with a short schedule, judged by the promotion gate like any job.
Changes are counted from the later of the model's snapshot and the log position when the last
retrain was enqueued, so a retrain the gate kept out is not repeated until as much has changed
again. At most one such job runs per dataset at a time, and after a failed one the policy
waits `backoff_s` before trying again. Off by default.

This module holds the policy's shape and the decision; service/retrain.py runs the check.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from state.jobs import FAILED, TERMINAL, Job

# A short schedule: a warm start needs far fewer epochs than the first training.
DEFAULT_CONFIG: dict[str, Any] = {"rounds": 2, "epochs_per_round": 5}


@dataclass
class RetrainPolicy:
    enabled: bool = False
    changed_fraction: float = 0.25  # entries since the snapshot / the current model's items
    config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CONFIG))
    backoff_s: float = 3600.0  # wait after a failed retrain before the next
    # Kept by the check, not set by a user: the last job it enqueued.
    last_job: str | None = None
    last_enqueued_at: float | None = None
    last_seq: int = 0  # the change log's position when it was enqueued
    last_error: str | None = None  # why the last attempt could not even be queued

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RetrainPolicy:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: str
    changed: int  # change-log entries since the current model's training snapshot
    items: int  # the current model's items
    fraction: float


def decide(policy: RetrainPolicy, changed: int, items: int, last: Job | None,
           now: float | None = None) -> Decision:
    """Whether to enqueue a retrain now, and why (or why not)."""
    now = time.time() if now is None else now
    fraction = changed / max(1, items)

    def no(reason: str) -> Decision:
        return Decision(False, reason, changed, items, fraction)

    if not policy.enabled:
        return no("the policy is off")
    if policy.last_error and (policy.last_enqueued_at or 0.0) + policy.backoff_s > now:
        return no(f"the last retrain could not be started ({policy.last_error}); trying again "
                  f"in {(policy.last_enqueued_at or 0.0) + policy.backoff_s - now:.0f} s")
    if last is not None and last.status not in TERMINAL:
        return no(f"retrain job {last.id} is {last.status}")
    if last is not None and last.status == FAILED:
        wait = (last.finished_at or 0.0) + policy.backoff_s - now
        if wait > 0:
            return no(f"retrain job {last.id} failed; trying again in {wait:.0f} s")
    if fraction < policy.changed_fraction:
        return no(f"{changed} of {items} items changed ({fraction:.1%}), below "
                  f"{policy.changed_fraction:.1%}")
    return Decision(True, f"{changed} of {items} items changed ({fraction:.1%}), at least "
                    f"{policy.changed_fraction:.1%}", changed, items, fraction)
