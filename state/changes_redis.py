"""The change log in Redis: per dataset a sorted set of entries scored by seq, a counter, and a
hash of each touched id's latest state. An append is an optimistic transaction on the counter
(WATCH / MULTI): the existence checks and the writes happen against one unchanged log, or the
append is tried again."""

from __future__ import annotations

import json
from typing import Any

import redis

from state.changes import Change, ChangeLog, check


class RedisChangeLog(ChangeLog):
    def __init__(self, url: str, prefix: str = "and:") -> None:
        self.prefix = prefix
        self.r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5,
                                      health_check_interval=30)

    def _k(self, dataset: str, part: str) -> str:
        return f"{self.prefix}changes:{dataset}:{part}"

    def append(self, dataset: str, changes: list[Change], known: dict[str, bool],
               upsert: bool = False) -> list[Change]:
        seq_key, log_key, items_key = (self._k(dataset, p) for p in ("seq", "log", "items"))
        ids = list(dict.fromkeys(c.id for c in changes))
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(seq_key)
                    raw = pipe.hmget(items_key, ids) if ids else []
                    recorded = {i: json.loads(v) if v else None for i, v in zip(ids, raw,
                                                                                 strict=True)}
                    check(changes, known, recorded, upsert)
                    first = int(pipe.get(seq_key) or 0) + 1
                    for offset, change in enumerate(changes):
                        change.seq = first + offset
                    pipe.multi()
                    if changes:
                        pipe.set(seq_key, changes[-1].seq)
                        pipe.zadd(log_key, {json.dumps({"seq": c.seq, **c.payload()}): c.seq
                                            for c in changes})
                        pipe.hset(items_key, mapping={c.id: json.dumps(c.state())
                                                      for c in changes})
                    pipe.execute()
                    return changes
                except redis.WatchError:
                    continue  # another writer appended first: check again against its entries

    def since(self, dataset: str, after: int, limit: int = 10_000) -> list[Change]:
        rows = self.r.zrangebyscore(self._k(dataset, "log"), f"({after}", "+inf", start=0,
                                    num=limit)
        out = []
        for row in rows:
            data = json.loads(row)
            out.append(Change.from_payload(data.pop("seq"), data))
        return out

    def last_seq(self, dataset: str) -> int:
        return int(self.r.get(self._k(dataset, "seq")) or 0)

    def item_state(self, dataset: str, item: str) -> dict[str, Any] | None:
        raw = self.r.hget(self._k(dataset, "items"), item)
        return json.loads(raw) if raw else None
