"""Per-client fixed-window rate limit on the `limits` engine (the library slowapi is built on).

Why not slowapi's route decorator: the limit has to be counted inside the auth dependency, keyed
by the *validated* key's digest and falling back to the client IP before the key is judged (so
key guessing is throttled too), and applied to every /api/v1 route, the batch ones included,
without each endpoint taking a `request`/`response` parameter. The storage URIs and key scheme
are slowapi's (`memory://` per process, `redis://host:port/db` shared by every worker and pod).
Measured here (bench/bench_api.py, in-process): a hit costs ~6-10 us with `memory://` and one
loopback round trip (~220 us, async, the event loop keeps serving) with Redis; slowapi's
decorator on a bare app measured +0-20 us, so the choice is about placement, not speed.

If the shared storage fails (Redis down or hung), the limiter degrades instead of failing open:
each process counts in its own memory (the same limit per process, so key guessing stays
throttled), logs one warning per outage, sets `loan_rate_limit_degraded` to 1 and says so in
/readyz (which stays 200: a limiter outage should not become an API outage). Every Redis call is
bounded by RATE_LIMIT_STORAGE_TIMEOUT_S (socket timeouts plus an asyncio timeout), and while
degraded the shared storage is retried at most every `_RETRY_S` seconds, so a hung Redis costs one
bounded wait per retry, not seconds per request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.storage import storage_from_string
from loguru import logger

from loan_default.services import metrics


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    """Epoch seconds when the current window ends."""

    @property
    def retry_after_s(self) -> int:
        return max(1, int(self.reset_at - time.time() + 0.999))

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(int(self.reset_at)).encode()),
        ]


def _async_uri(uri: str) -> str:
    return uri if uri.startswith("async+") else f"async+{uri}"


class RateLimiter:
    """`per_minute` hits per identity per fixed one-minute window."""

    _CACHE_MAX = 10_000
    #: While degraded, the shared storage is tried again at most this often (seconds).
    _RETRY_S = 5.0

    def __init__(
        self,
        *,
        per_minute: int,
        storage_uri: str,
        key_prefix: str,
        storage_timeout_s: float = 0.25,
    ) -> None:
        self.item = RateLimitItemPerMinute(per_minute, namespace=key_prefix)
        self.storage_uri = storage_uri
        self.storage_timeout_s = storage_timeout_s
        uri = _async_uri(storage_uri)
        options: dict[str, Any] = {}
        self.shared = "redis" in uri.split("://", 1)[0]
        if self.shared:
            options = {
                "implementation": "redispy",
                "key_prefix": key_prefix,
                # redis-py's own bounds; the asyncio timeout in `_count` covers the rest
                "socket_timeout": storage_timeout_s,
                "socket_connect_timeout": storage_timeout_s,
            }
        storage = storage_from_string(uri, **options)
        if not isinstance(storage, Storage):
            raise ValueError(f"RATE_LIMIT_STORAGE_URI {storage_uri!r} has no async storage")
        self.storage = storage
        fallback = storage_from_string("async+memory://")
        assert isinstance(fallback, Storage)  # nosec B101 - the memory storage is async here
        self.fallback = fallback
        self._expiry = self.item.get_expiry()
        # window end per key: saves the second round trip for all but the window's first hit
        self._reset_at: dict[str, float] = {}
        self._healthy = True
        self._retry_at = 0.0
        metrics.RATE_LIMIT_DEGRADED.set(0)

    @property
    def degraded(self) -> bool:
        return not self._healthy

    def status(self) -> dict[str, str]:
        """For /readyz: which storage counts (no URI: it may carry a password)."""
        if not self.shared:
            return {"storage": "memory", "status": "ok"}
        return {"storage": "redis", "status": "ok" if self._healthy else "degraded"}

    async def hit(self, identity: str) -> Decision:
        """Count one request in the shared storage, or in process memory while it is down."""
        key = self.item.key_for(identity)
        if not self.shared:  # memory:// is the process's own: nothing to bound or fall back from
            return await self._count(self.storage, key)
        if self._healthy or time.monotonic() >= self._retry_at:
            try:
                async with asyncio.timeout(self.storage_timeout_s):
                    decision = await self._count(self.storage, key)
            except Exception as exc:  # any storage failure: degrade, never fail the request
                self._degrade(exc)
            else:
                if not self._healthy:
                    logger.info("rate-limit storage available again; shared limit restored")
                    self._healthy = True
                    metrics.RATE_LIMIT_DEGRADED.set(0)
                return decision
        return await self._count(self.fallback, key)

    def _degrade(self, exc: BaseException) -> None:
        metrics.RATE_LIMIT_STORAGE_ERRORS.inc()
        self._retry_at = time.monotonic() + self._RETRY_S
        if self._healthy:
            logger.warning(
                "rate-limit storage unavailable ({}); limiting per process in memory until it "
                "is back",
                type(exc).__name__,
            )
            self._healthy = False
            metrics.RATE_LIMIT_DEGRADED.set(1)

    async def _count(self, storage: Storage, key: str) -> Decision:
        """Count the hit in `storage` and decide (one call: this runs on every request)."""
        count = await storage.incr(key, self._expiry)
        now = time.time()
        cache_key = key if storage is self.storage else f"fallback:{key}"
        reset_at = self._reset_at.get(cache_key, 0.0)
        if count == 1:
            reset_at = now + self._expiry
        elif reset_at <= now:
            reset_at = await storage.get_expiry(key)
        if len(self._reset_at) > self._CACHE_MAX:
            self._reset_at.clear()
        self._reset_at[cache_key] = reset_at
        limit = self.item.amount
        return Decision(count <= limit, limit, max(0, limit - count), reset_at)

    async def reset(self) -> None:
        await self.storage.reset()
        await self.fallback.reset()

    async def close(self) -> None:
        """Release connections (the redis-py async pool)."""
        bridge = getattr(self.storage, "bridge", None)
        for attr in ("storage", "_storage"):
            client = getattr(bridge, attr, None)
            if client is not None and hasattr(client, "aclose"):
                try:
                    await client.aclose()
                except Exception:  # closing on shutdown; nothing left to protect
                    logger.debug("rate-limit storage close failed")
