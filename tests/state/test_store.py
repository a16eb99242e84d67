"""The job-store contract, against a real Redis and a real SQLite file."""


from state.jobs import CANCELED, QUEUED, RUNNING, SUCCEEDED, Job
from tests.processes import wait_for


def test_create_get_and_list_newest_first(store):
    jobs = []
    for i in range(5):
        job = Job.new("d", {"rounds": i})
        job.created_at = 1000.0 + i
        jobs.append(store.create(job))
    got = store.get(jobs[2].id)
    assert got == jobs[2] and got.config == {"rounds": 2} and got.progress == {}
    page, total = store.list(offset=1, limit=2)
    assert total == 5 and [j.id for j in page] == [jobs[3].id, jobs[2].id]
    assert store.get("nope") is None


def test_transitions_are_compare_and_set(store):
    job = store.create(Job.new("d", {}))
    assert store.transition(job.id, {QUEUED}, RUNNING, attempts=1)
    assert not store.transition(job.id, {QUEUED}, RUNNING)  # already running
    got = store.get(job.id)
    assert got.status == RUNNING and got.attempts == 1
    assert store.list(0, 10, RUNNING)[1] == 1 and store.list(0, 10, QUEUED)[1] == 0
    store.update(job.id, progress={"epoch": 3, "loss": 1.5})
    assert store.get(job.id).progress == {"epoch": 3, "loss": 1.5}
    assert store.transition(job.id, {RUNNING}, SUCCEEDED, model_version="v1")
    assert store.counts()[SUCCEEDED] == 1 and store.get(job.id).model_version == "v1"


def test_cancel_queued_at_once_running_by_flag(store):
    queued = store.create(Job.new("d", {}))
    assert store.request_cancel(queued.id).status == CANCELED
    running = store.create(Job.new("d", {}))
    store.transition(running.id, {QUEUED}, RUNNING)
    after = store.request_cancel(running.id)
    assert after.status == RUNNING and after.cancel_requested


def test_leases_are_exclusive_and_expire(store):
    """While held (a lease far longer than the test), a lease is the holder's alone; once its
    time has passed (a short one, awaited as a state, not a fixed sleep) it is no one's."""
    job = store.create(Job.new("d", {}))
    assert store.acquire(job.id, "a", 60)
    assert not store.acquire(job.id, "b", 60)
    assert store.renew(job.id, "a", 60) and not store.renew(job.id, "b", 60)
    assert store.lease_holder(job.id) == "a"
    store.transition(job.id, {QUEUED}, RUNNING)
    assert store.lost_jobs() == []
    assert store.renew(job.id, "a", 0.2)  # shortened: it lapses on its own
    wait_for(lambda: store.lease_holder(job.id) is None, 30, "the lease to lapse")
    assert [j.id for j in store.lost_jobs()] == [job.id]
    assert not store.renew(job.id, "a", 60)  # a lapsed lease cannot be revived
    assert store.acquire(job.id, "b", 60)
    store.release(job.id, "a")  # not a's to release
    assert store.lease_holder(job.id) == "b"
    store.release(job.id, "b")
    assert store.lease_holder(job.id) is None


def test_history(store):
    job = store.create(Job.new("d", {}))
    for e in range(3):
        store.append_history(job.id, {"epoch": e})
    assert [r["epoch"] for r in store.history(job.id)] == [0, 1, 2]


def test_worker_capacity_is_the_largest_live_one_and_expires(store):
    assert store.largest_capacity() == 0
    store.advertise_capacity("small", 1, 60)
    store.advertise_capacity("big", 4, 60)
    assert store.largest_capacity() == 4
    store.advertise_capacity("big", 2, 60)  # a renewal replaces the worker's count
    assert store.largest_capacity() == 2
    # "big" renews one last time, briefly, and stops: once that lapses (awaited as a state,
    # not a fixed sleep), only "small" is left.
    store.advertise_capacity("big", 2, 0.2)
    wait_for(lambda: store.largest_capacity() == 1, 30, "the stopped worker's capacity to expire")
    assert store.largest_capacity() == 1
