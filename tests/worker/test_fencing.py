"""A worker writes a job's record only while it holds the job's lease (a fencing check in the
same atomic step as the write): the store contract on a real Redis and a real SQLite file, and
real worker processes paused with SIGSTOP past their lease while another worker takes over."""

import json
import os
import re
import signal
import sqlite3
import uuid

import pytest

from state.jobs import CANCELED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job
from state.store_redis import RedisJobStore
from state.store_sqlite import SqliteJobStore
from tests.processes import wait_for
from tests.worker.conftest import TINY, write_tiny_dataset
from trainer.bundle import current_version, validate
from worker.runner import record_crash
from worker.tasks import job_processes

LONG = 60.0  # a lease that cannot lapse during a test step



def _running(store, owner: str) -> Job:
    job = store.create(Job.new("d", {}))
    assert store.acquire(job.id, owner, LONG)
    assert store.transition(job.id, {QUEUED}, RUNNING, owner=owner, worker=owner, attempts=1)
    return job


def _lapsed(store, owner: str) -> Job:
    """A running job whose owner's lease has lapsed: held while it is set up (however slow
    the machine), then shortened and awaited as a state (however fast)."""
    job = _running(store, owner)
    assert store.renew(job.id, owner, 0.2)
    wait_for(lambda: store.lease_holder(job.id) is None, 30, "the lease to lapse")
    return job


def test_writes_naming_an_owner_land_only_while_it_holds_the_lease(store):
    job = _running(store, "a")
    assert not store.update_running(job.id, "b", progress={"epoch": 9})
    assert not store.transition(job.id, {RUNNING}, SUCCEEDED, owner="b")
    assert store.update_running(job.id, "a", progress={"epoch": 1})
    assert store.get(job.id).progress == {"epoch": 1}
    # The lease lapses and another worker takes the job: the first one's writes are refused.
    stale = _lapsed(store, "a")
    assert not store.update_running(stale.id, "a", progress={"epoch": 2})
    assert store.acquire(stale.id, "b", LONG)
    assert not store.transition(stale.id, {RUNNING}, FAILED, owner="a", error="stale")
    assert not store.extend_history(stale.id, 0, [{"global_epoch": 1}], owner="a")
    assert store.transition(stale.id, {RUNNING}, SUCCEEDED, owner="b")
    after = store.get(stale.id)
    assert after.status == SUCCEEDED and after.error is None and after.progress == {}
    assert store.history(stale.id) == []


def test_a_late_renewal_is_logged_with_the_gap_and_the_lease(store, caplog):
    """A process that stalls past half its lease says so when it renews (the stall that
    sends a live job to another worker is otherwise silent)."""
    from worker.lease import Lease

    job = store.create(Job.new("d", {}))
    lease = Lease(store, job.id, "a", 0.4)
    assert lease.acquire()
    with caplog.at_level("WARNING", logger="worker.lease"):
        assert lease.renew()
        assert not caplog.records  # on time
        wait_for(lambda: not lease.held(), 30, "the local bound to run out")
        lease.renew()  # whether the store has let it lapse yet or not
    [late] = [r.getMessage() for r in caplog.records if "since the lease" in r.getMessage()]
    assert job.id in late and "(it lasts 0.4 s)" in late, late


def test_conditions_on_the_lease_and_on_fields(store):
    job = store.create(Job.new("d", {}))
    assert store.transition(job.id, {QUEUED}, QUEUED, unleased=True, when={"worker": None},
                            note="nobody holds it")
    assert store.acquire(job.id, "a", LONG)
    assert not store.transition(job.id, {QUEUED}, QUEUED, unleased=True, note="held")
    assert not store.transition(job.id, {QUEUED}, QUEUED, when={"worker": "a"}, note="x")
    assert store.get(job.id).note == "nobody holds it"
    with pytest.raises(KeyError):
        store.transition(job.id, {QUEUED}, QUEUED, when={"no_such_field": 1})


def test_history_is_written_by_position_never_twice_never_with_a_gap(store):
    job = _running(store, "a")
    epochs = [{"global_epoch": e} for e in range(1, 5)]
    assert store.extend_history(job.id, 0, epochs[:2], owner="a") == 2
    assert store.extend_history(job.id, 0, epochs[:3], owner="a") == 3  # a retry, and one more
    assert store.extend_history(job.id, 1, epochs[1:3], owner="a") == 3  # a resumed worker
    assert store.extend_history(job.id, 5, [{"global_epoch": 6}], owner="a") == 3  # a gap
    assert store.extend_history(job.id, 3, epochs[3:], owner="a") == 4
    assert store.extend_history(job.id, 4, [{"global_epoch": 5}], owner="b") is None
    assert [r["global_epoch"] for r in store.history(job.id)] == [1, 2, 3, 4]


def test_a_cancel_and_the_commit_to_publish_exclude_each_other(store):
    canceled_first = _running(store, "a")
    assert store.request_cancel(canceled_first.id).cancel_requested
    assert not store.transition(canceled_first.id, {RUNNING}, RUNNING, owner="a",
                                when={"cancel_requested": False}, committed=True)
    committed_first = _running(store, "a")
    assert store.transition(committed_first.id, {RUNNING}, RUNNING, owner="a",
                            when={"cancel_requested": False}, committed=True)
    after = store.request_cancel(committed_first.id)
    assert after.status == RUNNING and after.committed and not after.cancel_requested


def test_a_crash_fails_the_job_only_while_it_is_still_the_crashed_process_s(store):
    # Its lease is live: failed, with the reason.
    held = _running(store, "a")
    assert record_crash(store, held.id, -9, "a")
    got = store.get(held.id)
    assert got.status == FAILED and "killed by signal 9" in got.error
    assert store.lease_holder(held.id) is None
    # Another worker took the job over: left alone.
    taken = _lapsed(store, "a")
    assert store.acquire(taken.id, "b", LONG)
    assert not record_crash(store, taken.id, -9, "a")
    assert store.get(taken.id).status == RUNNING and store.lease_holder(taken.id) == "b"
    # Its lease lapsed and nobody took the job since: failed.
    lapsed = _lapsed(store, "a")
    assert record_crash(store, lapsed.id, 1, "a")
    assert "exited with code 1" in store.get(lapsed.id).error
    # Re-queued after the lapse (the sweeper saw it lost first): left to resume elsewhere.
    requeued = _lapsed(store, "a")
    assert store.transition(requeued.id, {RUNNING}, QUEUED, unleased=True)
    assert not record_crash(store, requeued.id, -9, "a")
    assert store.get(requeued.id).status == QUEUED
    # Died before taking the lease of a job that never started: failed, not left queued.
    never = store.create(Job.new("d", {}))
    assert record_crash(store, never.id, 1, "a")
    assert store.get(never.id).status == FAILED


def test_records_of_an_older_version_read_with_the_new_fields_defaults(tmp_path, redis_server):
    # SQLite: a table made before `committed`, `enqueued_at` and `gate` existed gains them,
    # and its `promote` holds the bool it held then (1: make the model current).
    path = tmp_path / "old.sqlite3"
    newer = ("committed", "enqueued_at", "gate")
    old_columns = [c for c in Job.__dataclass_fields__ if c not in newer]
    job = Job.new("d", {})
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE jobs ({', '.join(old_columns)})")
        values = job.to_dict() | {"promote": True}
        db.execute(f"INSERT INTO jobs VALUES ({', '.join('?' for _ in old_columns)})",
                   [json.dumps(values[c]) if c in ("config", "progress") else values[c]
                    for c in old_columns])
    sqlite_store = SqliteJobStore(path)
    # Redis: a hash written without them.
    redis_store = RedisJobStore(redis_server.url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    redis_store.create(job)
    redis_store.r.hdel(redis_store._k("job", job.id), *newer)
    redis_store.r.hset(redis_store._k("job", job.id), "promote", json.dumps(True))
    for s in (sqlite_store, redis_store):
        got = s.get(job.id)
        assert got.committed is False and got.enqueued_at is None and got.gate == {}
        assert got.promote == "always"  # what true meant
        assert s.request_cancel(job.id).status == CANCELED


# --- real workers ---------------------------------------------------------------------------

def _holder(stack, workers):
    """The worker whose process group runs a job process now."""
    return wait_for(lambda: next((w for w in workers if job_processes(w.proc.pid)), None),
                    60, "a worker running the job")


def test_a_paused_worker_never_writes_the_record_of_a_job_another_took_over(redis_stack):
    stack = redis_stack
    tiny = write_tiny_dataset(stack.settings.data_root)
    a = stack.start_worker()
    job = stack.submit(tiny, **TINY, rounds=2, epochs_per_round=10)
    stack.wait(job.id, lambda j: j.progress.get("global_epoch", 0) >= 1, what="epoch 1 on a")
    a.pause()  # past its lease (LEASE_S in conftest): b's sweep re-queues the job and b resumes it
    b = stack.start_worker()
    done = stack.finished(job.id)
    assert done.status == SUCCEEDED, done.error
    assert done.attempts == 2 and "lost" in done.note
    assert job_processes(a.proc.pid), "a's job process should still be there, paused"
    record, history = done.to_dict(), stack.store.history(job.id)
    manifest = validate(stack.settings.models_root / done.model_version)
    a.resume()
    wait_for(lambda: not job_processes(a.proc.pid), 120, "a's job process to give up")
    # a wrote nothing: the record is as b left it, every epoch once, b's model current.
    assert stack.store.get(job.id).to_dict() == record
    assert stack.store.history(job.id) == history
    assert [r["global_epoch"] for r in history] == list(range(1, 21))
    assert current_version(stack.settings.models_root) == done.model_version
    assert validate(stack.settings.models_root / done.model_version) == manifest
    assert not [p for p in stack.settings.models_root.iterdir() if p.name.startswith(".tmp-")]

    # Now a paused worker whose training process dies meanwhile (killed while paused): when it
    # resumes, its task must not record the crash over the job the other worker runs now.
    second = stack.submit(tiny, **TINY, rounds=2, epochs_per_round=15)
    stack.wait(second.id, lambda j: j.progress.get("global_epoch", 0) >= 1,
               what="epoch 1 of the second job")
    holder = _holder(stack, [a, b])
    other = b if holder is a else a
    holder.pause()
    stack.wait(second.id, lambda j: j.status == RUNNING and j.attempts == 2,
               what="the other worker to take the second job over")
    for pid in job_processes(holder.proc.pid):
        os.kill(pid, signal.SIGKILL)
    holder.resume()  # its task sees its training process killed by signal 9
    wait_for(lambda: re.search(r"Task and\.train\[.*\] succeeded in .*: -9",
                               holder.log.read_text(errors="replace")), 60,
             "the resumed worker's task to end")
    meanwhile = stack.store.get(second.id)
    assert meanwhile.status in (RUNNING, SUCCEEDED) and meanwhile.error is None, meanwhile
    assert "no longer its own" in holder.log.read_text(errors="replace")
    done = stack.finished(second.id)
    assert done.status == SUCCEEDED, done.error
    assert done.attempts == 2 and done.error is None
    assert [r["global_epoch"] for r in stack.store.history(second.id)] == list(range(1, 31))
    assert current_version(stack.settings.models_root) == done.model_version
    assert other.alive() and holder.alive()
