"""The change log in Redis: per dataset a sorted set of entries scored by seq, a counter, and a
hash of each touched id's latest state. An append is an optimistic transaction on the counter
(WATCH / MULTI): the existence checks and the writes happen against one unchanged log, or the
append is tried again. A request's token is a key of its own (expiring) holding the first seq
it got, written in the same transaction; it is read first on every try.

redis-py reports a connection lost during EXEC as WatchError too: the transaction may have run.
The next try then finds the token and returns what was committed."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from state.changes import TOKEN_TTL_S, Change, ChangeLog, check, numbered, parse_state


class RedisChangeLog(ChangeLog):
    def __init__(self, url: str, prefix: str = "and:") -> None:
        self.prefix = prefix
        self.r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5,
                                      health_check_interval=30)

    def _k(self, dataset: str, part: str) -> str:
        return f"{self.prefix}changes:{dataset}:{part}"

    def append(self, dataset: str, changes: list[Change], known: dict[str, bool],
               upsert: bool = False, token: str | None = None) -> list[Change]:
        seq_key, log_key, items_key = (self._k(dataset, p) for p in ("seq", "log", "items"))
        token_key = None if token is None else self._k(dataset, f"request:{token}")
        ids = list(dict.fromkeys(c.id for c in changes))
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(seq_key)
                    done = pipe.get(token_key) if token_key else None
                    if done is not None:
                        return numbered(changes, int(done))
                    raw = pipe.hmget(items_key, ids) if ids else []
                    recorded = {i: json.loads(v) if v else None for i, v in zip(ids, raw,
                                                                                 strict=True)}
                    check(changes, known, recorded, upsert)
                    numbered(changes, int(pipe.get(seq_key) or 0) + 1)
                    pipe.multi()
                    if changes:
                        pipe.set(seq_key, changes[-1].seq)
                        if token_key:
                            pipe.set(token_key, changes[0].seq, ex=TOKEN_TTL_S)
                        pipe.zadd(log_key, {json.dumps({"seq": c.seq, **c.payload()}): c.seq
                                            for c in changes})
                        pipe.hset(items_key, mapping={c.id: json.dumps(c.state())
                                                      for c in changes})
                    pipe.execute()
                    return changes
                except redis.WatchError:
                    # Another writer appended first, or the reply to EXEC was lost: check
                    # again (the token says whether this append is already in).
                    continue

    def _rows(self, dataset: str, after: int, limit: int) -> list[tuple[int, str | bytes]]:
        rows: list[tuple[bytes, float]] = self.r.zrangebyscore(
            self._k(dataset, "log"), f"({after}", "+inf", start=0, num=limit, withscores=True)
        return [(int(score), raw) for raw, score in rows]

    def _drop(self, dataset: str, seqs: list[int]) -> None:
        key = self._k(dataset, "log")
        with self.r.pipeline(transaction=True) as pipe:
            for seq in seqs:
                pipe.zremrangebyscore(key, seq, seq)
            pipe.execute()

    def _record_set_aside(self, dataset: str, seq: int, problem: str) -> None:
        self.r.hsetnx(self._k(dataset, "set_aside"), str(seq),
                      json.dumps({"problem": problem, "at": time.time()}))

    def set_aside(self, dataset: str) -> dict[int, str]:
        raw = self.r.hgetall(self._k(dataset, "set_aside"))
        return {int(k): json.loads(v)["problem"] for k, v in raw.items()}

    def last_seq(self, dataset: str) -> int:
        return int(self.r.get(self._k(dataset, "seq")) or 0)

    def item_state(self, dataset: str, item: str) -> dict[str, Any] | None:
        return parse_state(dataset, item, self.r.hget(self._k(dataset, "items"), item))
