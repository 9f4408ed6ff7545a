"""Per-client fixed-window rate limit on the `limits` engine (the library slowapi is built on).

Why not slowapi's route decorator: the limit has to be counted inside the auth dependency, keyed
by the *validated* key's digest and falling back to the client IP before the key is judged (so
key guessing is throttled too), and applied to every /api/v1 route, the batch ones included,
without each endpoint taking a `request`/`response` parameter. The storage URIs and key scheme
are slowapi's (`memory://` per process, `redis://host:port/db` shared by every worker and pod).
Measured here (bench/bench_api.py, in-process): a hit costs ~6-10 us with `memory://` and one
loopback round trip (~220 us, async, the event loop keeps serving) with Redis; slowapi's
decorator on a bare app measured +0-20 us, so the choice is about placement, not speed.

If the storage fails (Redis down), requests are let through and one warning is logged per outage:
a limiter outage should not become an API outage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.storage import storage_from_string
from loguru import logger


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

    def __init__(self, *, per_minute: int, storage_uri: str, key_prefix: str) -> None:
        self.item = RateLimitItemPerMinute(per_minute, namespace=key_prefix)
        self.storage_uri = storage_uri
        uri = _async_uri(storage_uri)
        options: dict[str, str] = {}
        if "redis" in uri.split("://", 1)[0]:
            options = {"implementation": "redispy", "key_prefix": key_prefix}
        storage = storage_from_string(uri, **options)
        if not isinstance(storage, Storage):
            raise ValueError(f"RATE_LIMIT_STORAGE_URI {storage_uri!r} has no async storage")
        self.storage = storage
        self._expiry = self.item.get_expiry()
        # window end per key: saves the second round trip for all but the window's first hit
        self._reset_at: dict[str, float] = {}
        self._healthy = True

    async def hit(self, identity: str) -> Decision | None:
        """Count one request; None when the storage is unavailable (the request is allowed)."""
        key = self.item.key_for(identity)
        try:
            count = await self.storage.incr(key, self._expiry)
            now = time.time()
            reset_at = self._reset_at.get(key, 0.0)
            if count == 1:
                reset_at = now + self._expiry
            elif reset_at <= now:
                reset_at = await self.storage.get_expiry(key)
            if len(self._reset_at) > self._CACHE_MAX:
                self._reset_at.clear()
            self._reset_at[key] = reset_at
        except Exception as exc:
            if self._healthy:
                logger.warning(
                    "rate-limit storage unavailable ({}); requests are not limited",
                    type(exc).__name__,
                )
                self._healthy = False
            return None
        if not self._healthy:
            logger.info("rate-limit storage available again")
            self._healthy = True
        limit = self.item.amount
        return Decision(count <= limit, limit, max(0, limit - count), reset_at)

    async def reset(self) -> None:
        await self.storage.reset()

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
