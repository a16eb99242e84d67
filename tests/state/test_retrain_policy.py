"""The retrain decision on cases small enough to check by hand, and the policy's storage in
both job-store backends."""

from __future__ import annotations

from state.jobs import FAILED, RUNNING, SUCCEEDED, Job
from state.retrain import RetrainPolicy, decide


def _job(status: str, finished_at: float | None = None) -> Job:
    return Job(id="j1", dataset="d", config={}, status=status, finished_at=finished_at)


def test_due_once_the_changed_share_reaches_the_threshold():
    on = RetrainPolicy(enabled=True, changed_fraction=0.25)
    assert decide(on, 24, 100, None).due is False  # 24 % < 25 %
    d = decide(on, 25, 100, None)
    assert d.due is True and d.fraction == 0.25 and "25 of 100 items changed" in d.reason
    assert decide(RetrainPolicy(enabled=False), 100, 100, None).due is False


def test_one_at_a_time_and_a_back_off_after_a_failure():
    on = RetrainPolicy(enabled=True, changed_fraction=0.1, backoff_s=600)
    assert "is running" in decide(on, 50, 100, _job(RUNNING)).reason
    assert decide(on, 50, 100, _job(SUCCEEDED, 0.0)).due is True
    failed = _job(FAILED, finished_at=1000.0)
    assert decide(on, 50, 100, failed, now=1599.0).due is False  # 1 s of back-off left
    assert decide(on, 50, 100, failed, now=1600.0).due is True
    cannot = RetrainPolicy(enabled=True, changed_fraction=0.1, backoff_s=600,
                           last_error="bad config", last_enqueued_at=1000.0)
    assert decide(cannot, 50, 100, None, now=1500.0).due is False
    assert decide(cannot, 50, 100, None, now=1601.0).due is True


def test_the_store_keeps_a_policy_per_dataset(store):
    assert store.get_policy("a") is None
    store.put_policy("a", RetrainPolicy(enabled=True).to_dict())
    assert RetrainPolicy.from_dict(store.get_policy("a")).enabled is True
    assert store.get_policy("b") is None
