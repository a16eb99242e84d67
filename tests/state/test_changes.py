"""The change log contract, on a real Redis and a real SQLite file."""

import threading
import uuid

import numpy as np
import pytest

from state.changes import ADD, DELETE, Change, ChangeConflict
from state.changes_redis import RedisChangeLog
from state.changes_sqlite import SqliteChangeLog


@pytest.fixture(params=["redis", "sqlite"])
def log(request, tmp_path):
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
        return RedisChangeLog(url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    return SqliteChangeLog(tmp_path / "jobs.sqlite3")


def _add(item, label=None, vector=(1.0, 0.0)):
    return Change(ADD, item, label=label, path=f".items/{item}", version="v1",
                  vector=np.asarray(vector, dtype=np.float32))


def test_entries_come_back_in_order_with_their_vectors(log):
    assert log.last_seq("d") == 0 and log.since("d", 0) == []
    log.append("d", [_add("a", "cat"), _add("b", vector=(0.6, 0.8))], known={})
    log.append("d", [Change(DELETE, "a")], known={})
    log.append("other", [_add("a")], known={})  # datasets have logs of their own
    entries = log.since("d", 0)
    assert [(c.seq, c.op, c.id) for c in entries] == [(1, ADD, "a"), (2, ADD, "b"),
                                                      (3, DELETE, "a")]
    assert entries[0].label == "cat" and entries[0].version == "v1"
    assert np.array_equal(entries[1].vector, np.asarray([0.6, 0.8], dtype=np.float32))
    assert entries[2].vector is None
    assert [c.seq for c in log.since("d", 1)] == [2, 3] and log.last_seq("d") == 3
    assert [c.seq for c in log.since("d", 0, limit=2)] == [1, 2]
    assert [c.seq for c in log.changes_between("d", 1, 2)] == [2]
    assert log.item_state("d", "a")["state"] == "deleted"
    assert log.item_state("d", "b")["state"] == "live" and log.item_state("d", "z") is None


def test_conflicts_append_nothing(log):
    log.append("d", [_add("a")], known={"base.jpg": True})
    with pytest.raises(ChangeConflict) as err:
        log.append("d", [_add("new"), _add("a")], known={})
    assert err.value.item == "a" and err.value.exists
    with pytest.raises(ChangeConflict):  # in the published snapshot, untouched by the log
        log.append("d", [_add("base.jpg")], known={"base.jpg": True})
    with pytest.raises(ChangeConflict) as err:
        log.append("d", [Change(DELETE, "nothing")], known={})
    assert not err.value.exists
    assert log.last_seq("d") == 1 and log.item_state("d", "new") is None
    # upsert replaces; a deleted id can be added again; a request may delete what it added.
    log.append("d", [_add("a"), _add("base.jpg")], known={"base.jpg": True}, upsert=True)
    log.append("d", [Change(DELETE, "base.jpg")], known={"base.jpg": True})
    log.append("d", [_add("base.jpg"), Change(DELETE, "base.jpg")], known={"base.jpg": True})
    assert log.last_seq("d") == 6


def test_concurrent_writers_never_add_the_same_id_twice(log):
    wins, losses = [], []

    def writer(n):
        try:
            log.append("d", [_add(f"x{n}"), _add("shared")], known={})
            wins.append(n)
        except ChangeConflict:
            losses.append(n)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7
    assert [c.seq for c in log.since("d", 0)] == [1, 2]


def test_a_retried_request_is_appended_once(log):
    """A request sent again with its token (its reply was lost) gets the seqs of its first
    append and appends nothing, where it would otherwise conflict with itself."""
    first = log.append("d", [_add("a"), _add("b")], known={}, token="req-1")
    assert [c.seq for c in first] == [1, 2]
    again = log.append("d", [_add("a"), _add("b")], known={}, token="req-1")
    assert [c.seq for c in again] == [1, 2] and log.last_seq("d") == 2
    with pytest.raises(ChangeConflict):  # another request adding them conflicts
        log.append("d", [_add("a")], known={}, token="req-2")
    log.append("d", [Change(DELETE, "a")], known={}, token="req-3")
    assert [c.seq for c in log.append("d", [Change(DELETE, "a")], known={},
                                      token="req-3")] == [3]
    assert log.last_seq("d") == 3 and [c.seq for c in log.since("d", 0)] == [1, 2, 3]
    # Tokens are per dataset.
    assert [c.seq for c in log.append("e", [_add("a")], known={}, token="req-1")] == [1]


def test_a_lost_exec_reply_is_not_a_conflict(redis_server):
    """redis-py reports the connection lost during EXEC as WatchError and the log tries
    again: the transaction had run, and the retry recognises its own entries."""
    from tests.redis_proxy import ExecReplyDroppingProxy

    proxy = ExecReplyDroppingProxy(redis_server.port)
    try:
        log = RedisChangeLog(proxy.url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
        proxy.drop_next_exec()
        done = log.append("d", [_add("a"), _add("b")], known={}, token="req-1")
        assert proxy.dropped == 1
        assert [c.seq for c in done] == [1, 2]
        assert [(c.seq, c.id) for c in log.since("d", 0)] == [(1, "a"), (2, "b")]
    finally:
        proxy.close()


def _inject(log, dataset: str, seq: int, raw: str) -> None:
    """Write a log entry as it is, bypassing append (a corrupt row, a future format)."""
    if isinstance(log, RedisChangeLog):
        log.r.zadd(log._k(dataset, "log"), {raw: seq})
        log.r.set(log._k(dataset, "seq"), seq)
    else:
        with log._db() as db:
            db.execute("INSERT INTO changes (dataset, seq, payload) VALUES (?, ?, ?)",
                       (dataset, seq, raw))


def test_an_entry_that_cannot_be_read_is_set_aside(log):
    """A corrupt entry neither stops the entries after it nor fails the reader: it is set
    aside, its problem recorded, and the page says so."""
    log.append("d", [_add("a")], known={})
    _inject(log, "d", 2, "{not json")
    _inject(log, "d", 3, '{"seq": 3, "op": "frobnicate", "id": "b"}')
    _inject(log, "d", 4, '{"seq": 4, "op": "add", "id": "c", "path": ".items/c.png", '
                         '"vector": "***"}')
    log.append("d", [_add("e"), Change(DELETE, "a")], known={})
    page = log.since("d", 0)
    assert [(c.seq, c.op, c.id) for c in page] == [(1, ADD, "a"), (5, ADD, "e"),
                                                   (6, DELETE, "a")]
    assert [s.seq for s in page.set_aside] == [2, 3, 4] and page.last_read == 6
    assert "frobnicate" in page.set_aside[1].problem
    recorded = log.set_aside("d")
    assert sorted(recorded) == [2, 3, 4] and "vector" in recorded[4]
    # A page of nothing but corrupt entries: the reader reads on to the next good one (a
    # caller that stops at an empty page never stalls before it).
    page = log.since("d", 1, limit=2)
    assert [c.seq for c in page] == [5] and page.last_read == 5
    assert [s.seq for s in page.set_aside] == [2, 3, 4]
    assert list(log.since("d", 6)) == [] and log.since("d", 6).last_read == 6
    assert [c.seq for c in log.changes_between("d", 0, 6)] == [1, 5, 6]
    assert log.last_seq("d") == 6
    # A damaged state of an id reads as none recorded.
    if isinstance(log, RedisChangeLog):
        log.r.hset(log._k("d", "items"), "e", "{damaged")
    else:
        with log._db() as db:
            db.execute("UPDATE change_items SET state = '[1' WHERE dataset = 'd' AND id = 'e'")
    assert log.item_state("d", "e") is None and log.item_state("d", "a")["state"] == "deleted"



def test_a_vector_that_is_not_unit_is_dropped_and_the_item_kept(log):
    """No encoder makes such a vector (one would stand first in every search): the entry
    stays, without it, and whoever applies the entry embeds the item's image again."""
    log.append("d", [_add("a", vector=(3.0, 4.0)), _add("b", vector=(0.6, 0.8))], known={})
    _inject(log, "d", 3, '{"seq": 3, "op": "add", "id": "c", "path": ".items/c.png", '
                         '"vector": "AADAfwAAAAA="}')  # (nan, 0)
    page = log.since("d", 0)
    assert [(c.id, c.path) for c in page] == [("a", ".items/a"), ("b", ".items/b"),
                                              ("c", ".items/c.png")]
    assert page[0].vector is None and page[2].vector is None and not page.set_aside
    assert np.array_equal(page[1].vector, np.asarray([0.6, 0.8], dtype=np.float32))


def _held(log, dataset: str, upto: int | None = None, after: int = 0,
          start: dict[str, str | None] | None = None) -> dict[str, str | None]:
    """What a reader that held `start` (id -> label) at position `after` holds once it has
    applied the log (up to `upto`): every id's last state."""
    held = dict(start or {})
    for change in log.changes_between(dataset, after, log.last_seq(dataset) if upto is None
                                      else upto):
        if change.op == ADD:
            held[change.id] = change.label
        else:
            held.pop(change.id, None)
    return held


def test_compaction_keeps_each_ids_last_entry_and_every_reader_converges(log):
    """Superseded entries up to the floor go; a reader that held the collection at any
    position (the start, below the floor, at it, after it) ends with the collection that the
    whole log gave it."""
    log.append("d", [_add("a", "cat"), _add("b"), _add("c")], known={})  # 1 2 3
    log.append("d", [_add("a", "dog")], known={}, upsert=True)  # 4: replaces 1
    log.append("d", [Change(DELETE, "b"), Change(DELETE, "base.jpg")],
               known={"base.jpg": True})  # 5 6
    _inject(log, "d", 7, "{damaged")
    log.append("d", [_add("b", "new"), _add("c", "late")], known={}, upsert=True)  # 8 9
    log.append("other", [_add("a"), Change(DELETE, "a")], known={}, token="req-1")
    base = {"base.jpg": None}
    held_at = {p: _held(log, "d", p, start=base) for p in range(10)}
    final = held_at[9]
    assert final == {"a": "dog", "b": "new", "c": "late"}

    dropped = log.compact("d", 6)
    assert sorted((c.seq, c.op, c.id) for c in dropped) == [(1, ADD, "a"), (2, ADD, "b")]
    assert all(c.vector is None for c in dropped) and dropped[0].path == ".items/a"
    # 3 stays (c's last entry up to 6: it is replaced at 9, after the floor), 5 too (b's
    # delete, undone at 8); the damaged entry stays; the log's position and the other
    # dataset's log are untouched.
    assert [c.seq for c in log.since("d", 0)] == [3, 4, 5, 6, 8, 9]
    assert 7 in log.set_aside("d") and log.last_seq("d") == 9
    assert [c.seq for c in log.since("other", 0)] == [1, 2]
    for p in range(10):
        assert _held(log, "d", after=p, start=held_at[p]) == final, p
    assert _held(log, "d", 6, start=base) == held_at[6]  # a snapshot at the floor
    assert log.image_paths("d") == {".items/a", ".items/b", ".items/c"}
    assert log.item_state("d", "a")["seq"] == 4
    assert log.compact("d", 6) == []  # idempotent

    # Up to the newest entry: every id keeps one entry, the position stays.
    assert [c.seq for c in log.compact("d", 9)] == [3, 5]
    assert [c.seq for c in log.since("d", 0)] == [4, 6, 8, 9] and log.last_seq("d") == 9
    for p in range(10):
        assert _held(log, "d", after=p, start=held_at[p]) == final, p
    # Appends go on from the same position; a retried request still finds its seqs.
    assert [c.seq for c in log.append("d", [_add("z")], known={})] == [10]
    log.compact("other", 2)
    assert [c.seq for c in log.append("other", [_add("a")], known={}, token="req-1")] == [1]
    assert [(c.seq, c.op) for c in log.since("other", 0)] == [(2, DELETE)]


def test_compaction_reads_pages_and_commits_in_chunks(log):
    for n in range(1, 60):
        item = f"x{n % 7}"
        state = log.item_state("d", item)
        if state and state["state"] == "live" and n % 3 == 0:
            log.append("d", [Change(DELETE, item)], known={})
        else:
            log.append("d", [_add(item, str(n))], known={}, upsert=True)
    before = _held(log, "d")
    dropped = log.compact("d", 59, chunk=4)
    assert len(dropped) == 59 - 7 and len(log.since("d", 0)) == 7
    assert _held(log, "d") == before and log.last_seq("d") == 59
