"""Job records in Redis: one hash per job, a sorted set per status for listing, a lease key
with a TTL per running job. Status changes run as Lua scripts, so they are atomic."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from worker.jobs import JSON_FIELDS, STATUSES, Job, JobStore

# KEYS: job hash, status-set key prefix, all-jobs zset.
# ARGV: new status (plain), n, n allowed statuses (JSON, as stored), job id, field, value, ...
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return 0 end
local n = tonumber(ARGV[2])
local ok = false
for i = 1, n do if ARGV[2 + i] == current then ok = true end end
if not ok then return 0 end
local id = ARGV[3 + n]
local created = redis.call('ZSCORE', KEYS[3], id)
redis.call('ZREM', KEYS[2] .. string.sub(current, 2, -2), id)
redis.call('ZADD', KEYS[2] .. ARGV[1], created, id)
for i = 4 + n, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisJobStore(JobStore):
    def __init__(self, url: str, prefix: str = "and:") -> None:
        self.url = url
        self.prefix = prefix
        self.r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5,
                                      health_check_interval=30)
        self._transition = self.r.register_script(_TRANSITION)
        self._renew = self.r.register_script(_RENEW)
        self._release = self.r.register_script(_RELEASE)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _decode(self, raw: dict[bytes, bytes]) -> Job:
        values = {k.decode(): json.loads(v) for k, v in raw.items()}
        for name in JSON_FIELDS:
            values.setdefault(name, {})
        return Job(**values)

    def create(self, job: Job) -> Job:
        # Every field is stored as JSON: None, bools and numbers come back exact.
        data = {k: json.dumps(v) for k, v in job.to_dict().items()}
        with self.r.pipeline() as p:
            p.hset(self._k("job", job.id), mapping=data)
            p.zadd(self._k("jobs"), {job.id: job.created_at})
            p.zadd(self._k("status", job.status), {job.id: job.created_at})
            p.execute()
        return job

    def get(self, job_id: str) -> Job | None:
        raw = self.r.hgetall(self._k("job", job_id))
        return self._decode(raw) if raw else None

    def list(self, offset: int = 0, limit: int = 50,
             status: str | None = None) -> tuple[list[Job], int]:
        key = self._k("status", status) if status else self._k("jobs")
        total = int(self.r.zcard(key))
        ids = [i.decode() for i in self.r.zrevrange(key, offset, offset + limit - 1)]
        with self.r.pipeline() as p:
            for job_id in ids:
                p.hgetall(self._k("job", job_id))
            rows = p.execute()
        return [self._decode(raw) for raw in rows if raw], total

    def update(self, job_id: str, **fields: Any) -> None:
        fields.setdefault("updated_at", time.time())
        if self.r.exists(self._k("job", job_id)):
            self.r.hset(self._k("job", job_id),
                        mapping={k: json.dumps(v) for k, v in fields.items()})

    def transition(self, job_id: str, allowed_from: set[str] | frozenset[str], to: str,
                   **fields: Any) -> bool:
        assert to in STATUSES
        fields.setdefault("updated_at", time.time())
        fields["status"] = to
        flat = [x for k, v in fields.items() for x in (k, json.dumps(v))]
        allowed = [json.dumps(s) for s in sorted(allowed_from)]
        args = [to, str(len(allowed)), *allowed, job_id, *flat]
        keys = [self._k("job", job_id), self._k("status", ""), self._k("jobs")]
        return bool(self._transition(keys=keys, args=args))

    def append_history(self, job_id: str, record: dict[str, Any]) -> None:
        self.r.rpush(self._k("history", job_id), json.dumps(record))

    def history(self, job_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(self._k("history", job_id), 0, -1)]

    def acquire(self, job_id: str, owner: str, ttl_s: float) -> bool:
        return bool(self.r.set(self._k("lease", job_id), owner, nx=True, px=int(ttl_s * 1000)))

    def renew(self, job_id: str, owner: str, ttl_s: float) -> bool:
        return bool(self._renew(keys=[self._k("lease", job_id)], args=[owner, int(ttl_s * 1000)]))

    def release(self, job_id: str, owner: str) -> None:
        self._release(keys=[self._k("lease", job_id)], args=[owner])

    def lease_holder(self, job_id: str) -> str | None:
        value = self.r.get(self._k("lease", job_id))
        return value.decode() if value else None

    def ping(self) -> None:
        self.r.ping()
