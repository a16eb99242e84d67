"""Job records in Redis: one hash per job, a sorted set per status for listing, a lease key
with a TTL per running job, a list of epoch records per job. Every conditional write (status
changes, fenced writes) runs as one Lua script, so the check and the write are atomic."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import redis

from state.jobs import JSON_FIELDS, STATUSES, Job, JobStore, Records, field_default

# KEYS: job hash, status-set key prefix, all-jobs zset, lease key.
# ARGV[1]: JSON {to, allowed: [status as stored], id, owner ("" = any), unleased,
#                when: [[field, value as stored, default as stored]], set: [[field, value]]}.
_TRANSITION = """
local a = cjson.decode(ARGV[1])
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return 0 end
local ok = false
for _, s in ipairs(a.allowed) do if s == current then ok = true end end
if not ok then return 0 end
if a.owner ~= '' and redis.call('GET', KEYS[4]) ~= a.owner then return 0 end
if a.unleased and redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
for _, c in ipairs(a.when) do
  local v = redis.call('HGET', KEYS[1], c[1])
  if not v then v = c[3] end
  if v ~= c[2] then return 0 end
end
local created = redis.call('ZSCORE', KEYS[3], a.id)
redis.call('ZREM', KEYS[2] .. string.sub(current, 2, -2), a.id)
redis.call('ZADD', KEYS[2] .. a.to, created, a.id)
for _, kv in ipairs(a.set) do redis.call('HSET', KEYS[1], kv[1], kv[2]) end
return 1
"""
# KEYS: history list, lease key. ARGV: owner ("" = any), start, record, record, ...
_EXTEND_HISTORY = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local n = redis.call('LLEN', KEYS[1])
local start = tonumber(ARGV[2])
for i = 3, #ARGV do
  if start + i - 3 == n then
    redis.call('RPUSH', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
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
    transient_errors = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError,
                        ConnectionError, TimeoutError)

    def __init__(self, url: str, prefix: str = "and:") -> None:
        self.url = url
        self.prefix = prefix
        self.r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5,
                                      health_check_interval=30)
        self._transition = self.r.register_script(_TRANSITION)
        self._extend_history = self.r.register_script(_EXTEND_HISTORY)
        self._renew = self.r.register_script(_RENEW)
        self._release = self.r.register_script(_RELEASE)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _decode(self, raw: dict[bytes, bytes]) -> Job:
        values = {k.decode(): json.loads(v) for k, v in raw.items()}
        for name in JSON_FIELDS:
            values.setdefault(name, {})
        known = Job.__dataclass_fields__
        return Job(**{k: v for k, v in values.items() if k in known})

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

    def transition(self, job_id: str, allowed_from: set[str] | frozenset[str], to: str, *,
                   owner: str | None = None, unleased: bool = False,
                   when: Mapping[str, Any] | None = None, **fields: Any) -> bool:
        assert to in STATUSES
        fields.setdefault("updated_at", time.time())
        fields["status"] = to
        unknown = (set(fields) | set(when or ())) - set(Job.__dataclass_fields__)
        if unknown:
            raise KeyError(f"unknown job fields {sorted(unknown)}")
        spec = {
            "to": to, "id": job_id, "owner": owner or "", "unleased": unleased,
            "allowed": [json.dumps(s) for s in sorted(allowed_from)],
            "when": [[k, json.dumps(v), json.dumps(field_default(k))]
                     for k, v in (when or {}).items()],
            "set": [[k, json.dumps(v)] for k, v in fields.items()],
        }
        keys = [self._k("job", job_id), self._k("status", ""), self._k("jobs"),
                self._k("lease", job_id)]
        return bool(self._transition(keys=keys, args=[json.dumps(spec)]))

    def append_history(self, job_id: str, record: dict[str, Any]) -> None:
        self.r.rpush(self._k("history", job_id), json.dumps(record))

    def extend_history(self, job_id: str, start: int, records: Records, *,
                       owner: str | None = None) -> int | None:
        keys = [self._k("history", job_id), self._k("lease", job_id)]
        args = [owner or "", start, *(json.dumps(r) for r in records)]
        n = int(self._extend_history(keys=keys, args=args))
        return None if n < 0 else n

    def history(self, job_id: str) -> Records:
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

    def advertise_capacity(self, worker: str, gpus: int, ttl_s: float) -> None:
        self.r.set(self._k("capacity", worker), gpus, px=int(ttl_s * 1000))

    def largest_capacity(self) -> int:
        keys = list(self.r.scan_iter(match=self._k("capacity", "*"), count=1000))
        values = self.r.mget(keys) if keys else []
        return max((int(v) for v in values if v is not None), default=0)

    def get_policy(self, dataset: str) -> dict[str, Any] | None:
        raw = self.r.get(self._k("policy", dataset))
        return json.loads(raw) if raw else None

    def put_policy(self, dataset: str, policy: dict[str, Any]) -> None:
        self.r.set(self._k("policy", dataset), json.dumps(policy))

    def get_key_digest(self, collection: str) -> str | None:
        raw = self.r.get(self._k("collection-key", collection))
        return raw.decode() if isinstance(raw, bytes) else raw

    def put_key_digest(self, collection: str, digest: str) -> None:
        self.r.set(self._k("collection-key", collection), digest)

    def delete_key_digest(self, collection: str) -> bool:
        return bool(self.r.delete(self._k("collection-key", collection)))

    def ping(self) -> None:
        self.r.ping()
