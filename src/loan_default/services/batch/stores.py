"""The job store: Redis, shared by every API process and worker.

Keys are `<prefix><job>:rec|:done|:fail|:run|:b:<name>`, all expiring with the job
(`BATCH_RESULT_TTL_S`), and `<prefix>active`, the unfinished jobs by last activity (read by the
stall sweep, `sweep.py`). Writing a chunk's result is a pure overwrite of the same bytes followed
by an idempotent map insert, so a chunk scored twice (at-least-once delivery) still counts once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from loan_default.core.config import Settings
from loan_default.services.batch.records import (
    RENDERED_ROWS_TTL_S,
    JobRecord,
    JobState,
    StoreUnavailable,
)

#: What the store keeps: a view of the buffer Arrow wrote (`codec`; sent without a copy), read
#: back as bytes.
Blob = bytes | memoryview


@dataclass(frozen=True, slots=True)
class BegunChunk:
    """What a worker reads before scoring a chunk (`JobStore.begin_chunk`)."""

    record: JobRecord | None
    """None: the job expired (or never existed)."""
    done: bool
    """Some worker already stored this chunk's result."""
    blobs: list[bytes | None]
    """The blobs asked for, in order (empty when `record` is None or `done`)."""


class JobStore(Protocol):
    def create(self, record: JobRecord, blobs: Mapping[str, Blob]) -> None: ...
    def delete(self, job_id: str) -> None: ...
    def record(self, job_id: str) -> JobRecord | None: ...
    def state(self, job_id: str, prefetch: Sequence[str] = ()) -> JobState | None: ...
    def blobs(self, job_id: str, names: Sequence[str]) -> list[bytes | None]: ...
    def begin_chunk(
        self, job_id: str, index: int, names: Sequence[str], marker: str | None
    ) -> BegunChunk: ...
    def put_chunk(
        self,
        record: JobRecord,
        index: int,
        blobs: Mapping[str, Blob],
        marker: str,
        event: str | None = None,
        cached: Mapping[str, Blob] | None = None,
    ) -> bool: ...
    def take_events(self, limit: int) -> list[str]: ...
    def set_failed(self, record: JobRecord, message: str) -> None: ...
    def beat(self, worker_id: str, ttl_s: int) -> None: ...
    def alive(self, worker_ids: Sequence[str]) -> set[str]: ...
    def claim(self, key: str, value: str, ttl_s: int) -> str | None: ...
    def release(self, key: str) -> None: ...
    def track(self, job_id: str, at: float) -> None: ...
    def stale(self, before: float, limit: int) -> list[tuple[str, float]]: ...
    def untrack(self, job_id: str) -> None: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


#: Most metrics events kept while no API process scrapes them (the oldest are dropped).
MAX_PENDING_EVENTS = 100_000

#: After a chunk's result blobs are SET (in the same MULTI), HSETNX its marker (KEYS[1]); the
#: first time only, queue its metrics event (KEYS[2]); once every chunk is done, stop tracking
#: the job's activity (KEYS[3]). Returns 1 if new.
#: The blobs travel as plain SETs and MGETs, not through a script: a 3 MB script argument or
#: reply is copied into a Lua string and back, and Redis runs one script at a time, so with two
#: workers a chunk's reads and writes took 25-50 ms instead of ~10 (`bench_batch_file.py`).
_MARK_DONE = """
local new = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if new == 1 and ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[4])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[6]) then
  redis.call('ZREM', KEYS[3], ARGV[7])
end
return new
"""

#: A worker's reads before scoring: the record (KEYS[1]) and whether chunk ARGV[1] is done
#: (KEYS[2]); when its input (KEYS[4]) is there and ARGV[2] is a marker, mark the chunk begun
#: (KEYS[3], expiring with the record). The blobs come from an MGET in the same MULTI.
_BEGIN_CHUNK = """
local rec = redis.call('GET', KEYS[1])
if not rec then return {} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {rec, 1} end
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
  local ttl = redis.call('TTL', KEYS[1])
  if ttl > 0 then redis.call('EXPIRE', KEYS[3], ttl) end
end
return {rec, 0}
"""


class RedisJobStore:
    """Job store in Redis: `<prefix><job>:rec|:done|:fail|:b:<name>`, all with the job's TTL."""

    def __init__(self, url: str, *, prefix: str) -> None:
        import redis

        self._redis = redis
        self.client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=10
        )
        self.prefix = prefix
        self._events_key = f"{prefix}metrics:batch"
        self._active_key = f"{prefix}active"
        self._mark_done = self.client.register_script(_MARK_DONE)
        self._begin_chunk = self.client.register_script(_BEGIN_CHUNK)

    def _k(self, job_id: str, suffix: str) -> str:
        return f"{self.prefix}{job_id}:{suffix}"

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
            raise StoreUnavailable(
                "the batch job store is unavailable; retry shortly",
                detail={"store": "redis"},
            ) from exc

    @staticmethod
    def _script(pipe: Any, script: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
        pipe.evalsha(script.sha, len(keys), *keys, *args)

    def _atomic(self, build: Callable[[Any], None]) -> list[Any]:
        """`build`'s commands in one MULTI/EXEC round trip, scripts by EVALSHA.

        redis-py's own script-in-pipeline support asks `SCRIPT EXISTS` first, a second round
        trip every time; here a script Redis lost (a restart) fails its EVALSHA with NOSCRIPT, is
        loaded, and the transaction is sent again: none of its commands ran, or all are
        idempotent (SETs of the same bytes, a marker set again).
        """

        def send() -> list[Any]:
            pipe = self.client.pipeline(transaction=True)
            build(pipe)
            return list(pipe.execute())

        try:
            return send()
        except self._redis.exceptions.NoScriptError:
            for script in (self._begin_chunk, self._mark_done):
                self.client.script_load(script.script)
            return send()

    def create(self, record: JobRecord, blobs: Mapping[str, Blob]) -> None:
        ttl = _ttl(record)

        def run() -> None:
            pipe = self.client.pipeline(transaction=True)
            for name, data in blobs.items():
                pipe.set(self._k(record.job_id, f"b:{name}"), data, ex=ttl)
            pipe.set(self._k(record.job_id, "rec"), record.model_dump_json(), ex=ttl)
            pipe.zadd(self._active_key, {record.job_id: record.created_at})
            pipe.execute()

        self._call(run)

    def delete(self, job_id: str) -> None:
        def run() -> None:
            keys = list(self.client.scan_iter(match=self._k(job_id, "*"), count=1000))
            if keys:
                self.client.delete(*keys)
            self.client.zrem(self._active_key, job_id)

        self._call(run)

    def record(self, job_id: str) -> JobRecord | None:
        raw = self._call(lambda: self.client.get(self._k(job_id, "rec")))
        return None if raw is None else JobRecord.model_validate_json(raw)

    def state(self, job_id: str, prefetch: Sequence[str] = ()) -> JobState | None:
        """The job's record and progress; with the blobs named in `prefetch` (a reader's guess
        at what it will need next), in the same round trip."""

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self._k(job_id, "rec"))
            pipe.hgetall(self._k(job_id, "done"))
            pipe.get(self._k(job_id, "fail"))
            pipe.hgetall(self._k(job_id, "run"))
            if prefetch:
                pipe.mget([self._k(job_id, f"b:{name}") for name in prefetch])
            return list(pipe.execute())

        rec, done, fail, run_map, *blobs = self._call(run)
        if rec is None:
            return None
        return JobState(
            record=JobRecord.model_validate_json(rec),
            done={int(k): v.decode() for k, v in done.items()},
            failure=None if fail is None else fail.decode(),
            started={int(k): v.decode() for k, v in run_map.items()},
            prefetched={n: b for n, b in zip(prefetch, blobs[0], strict=True) if b is not None}
            if blobs
            else {},
        )

    def blobs(self, job_id: str, names: Sequence[str]) -> list[bytes | None]:
        keys = [self._k(job_id, f"b:{n}") for n in names]
        return list(self._call(lambda: self.client.mget(keys))) if keys else []

    def begin_chunk(
        self, job_id: str, index: int, names: Sequence[str], marker: str | None
    ) -> BegunChunk:
        """The record, whether chunk `index` is done, and blobs `names` (the first is the chunk's
        input); when that input is there and `marker` is given, the chunk is marked begun. One
        round trip, atomic (MULTI)."""
        blob_keys = [self._k(job_id, f"b:{n}") for n in names]
        keys = [*(self._k(job_id, s) for s in ("rec", "done", "run")), *blob_keys[:1]]

        def build(pipe: Any) -> None:
            self._script(pipe, self._begin_chunk, keys, [str(index), marker or ""])
            pipe.mget(blob_keys)

        reply, blobs = self._call(lambda: self._atomic(build))
        if not reply:
            return BegunChunk(None, False, [])
        record = JobRecord.model_validate_json(reply[0])
        if reply[1] == 1:
            return BegunChunk(record, True, [])
        return BegunChunk(record, False, list(blobs))

    def put_chunk(
        self,
        record: JobRecord,
        index: int,
        blobs: Mapping[str, Blob],
        marker: str,
        event: str | None = None,
        cached: Mapping[str, Blob] | None = None,
    ) -> bool:
        """Store a chunk's result blobs and mark it done; True if it was not done before.

        The metrics `event` is queued only on that first time, in the same transaction, so a
        chunk delivered twice is counted once whichever worker scored it. `cached` blobs live
        at most RENDERED_ROWS_TTL_S (readers can do without them).
        """
        ttl = _ttl(record)
        cached_ttl = min(ttl, RENDERED_ROWS_TTL_S)

        def build(pipe: Any) -> None:
            for name, data in blobs.items():
                pipe.set(self._k(record.job_id, f"b:{name}"), data, ex=ttl)
            for name, data in (cached or {}).items():
                pipe.set(self._k(record.job_id, f"b:{name}"), data, ex=cached_ttl)
            self._script(
                pipe,
                self._mark_done,
                [self._k(record.job_id, "done"), self._events_key, self._active_key],
                [
                    str(index),
                    marker,
                    ttl,
                    event or "",
                    MAX_PENDING_EVENTS,
                    record.n_chunks,
                    record.job_id,
                ],
            )

        return bool(self._call(lambda: self._atomic(build))[-1])

    def take_events(self, limit: int) -> list[str]:
        """Pop up to `limit` queued metrics events (each is taken by exactly one caller)."""
        popped = self._call(lambda: self.client.lpop(self._events_key, limit))
        return [_text(e) for e in popped or []]

    def set_failed(self, record: JobRecord, message: str) -> None:
        def run() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self._k(record.job_id, "fail"), message, ex=_ttl(record))
            pipe.zrem(self._active_key, record.job_id)
            pipe.execute()

        self._call(run)

    def beat(self, worker_id: str, ttl_s: int) -> None:
        self._call(lambda: self.client.set(f"{self.prefix}worker:{worker_id}", b"1", ex=ttl_s))

    def alive(self, worker_ids: Sequence[str]) -> set[str]:
        ids = list(worker_ids)
        if not ids:
            return set()
        found = self._call(lambda: self.client.mget([f"{self.prefix}worker:{w}" for w in ids]))
        return {w for w, v in zip(ids, found, strict=True) if v is not None}

    def claim(self, key: str, value: str, ttl_s: int) -> str | None:
        k = f"{self.prefix}idem:{key}"

        def run() -> str | None:
            if self.client.set(k, value, nx=True, ex=ttl_s):
                return None
            existing = self.client.get(k)
            return None if existing is None else _text(existing)

        result: str | None = self._call(run)
        return result

    def release(self, key: str) -> None:
        self._call(lambda: self.client.delete(f"{self.prefix}idem:{key}"))

    def track(self, job_id: str, at: float) -> None:
        """Record `at` (unix time) as the job's last known activity."""
        self._call(lambda: self.client.zadd(self._active_key, {job_id: at}))

    def stale(self, before: float, limit: int) -> list[tuple[str, float]]:
        """Up to `limit` tracked jobs with no activity recorded since `before`, oldest first."""
        found = self._call(
            lambda: self.client.zrangebyscore(
                self._active_key, "-inf", before, start=0, num=limit, withscores=True
            )
        )
        return [(_text(job), float(at)) for job, at in found]

    def untrack(self, job_id: str) -> None:
        """Stop watching a job (finished, failed or expired)."""
        self._call(lambda: self.client.zrem(self._active_key, job_id))

    def ping(self) -> None:
        self._call(self.client.ping)

    def close(self) -> None:
        self.client.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ttl(record: JobRecord) -> int:
    return max(1, math.ceil(record.expires_at - time.time()))


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def store_url(settings: Settings) -> str:
    """BATCH_STORE_URL, else the broker's Redis; empty when neither is configured."""
    if settings.batch_store_url:
        return settings.batch_store_url
    return settings.celery_broker_url if is_redis_url(settings.celery_broker_url) else ""


def store_from_settings(settings: Settings) -> JobStore | None:
    """The configured Redis job store; None without one (batch routes then answer 503)."""
    url = store_url(settings)
    return RedisJobStore(url, prefix=settings.batch_key_prefix) if url else None
