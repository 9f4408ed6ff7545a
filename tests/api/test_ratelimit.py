"""Rate limit: per key, 429 + Retry-After + X-RateLimit-*, memory:// and a shared Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.api.conftest import GOOD, JSON_HEADERS, Server, running, store_env
from tests.conftest import TEST_API_KEY, redis_url

pytestmark = pytest.mark.integration
SECOND_KEY = "second-key-abcdef012345"


def _post(server: Server, key: str = TEST_API_KEY) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/predict",
        json=GOOD,
        headers={**JSON_HEADERS, "X-API-Key": key},
    )


def _assert_limited(r: httpx.Response, limit: int) -> None:
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["success"] is False
    assert body["error"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["x-ratelimit-limit"] == str(limit)
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert int(r.headers["x-ratelimit-reset"]) > 0


def test_memory_limit_per_key(trained_store: Path, tmp_path: Path) -> None:
    env = store_env(trained_store, rate_limit_per_minute=5, api_keys=f"{TEST_API_KEY},{SECOND_KEY}")
    with running(env, tmp_path) as server:
        remaining = []
        for _ in range(5):
            r = _post(server)
            assert r.status_code == 200, r.text
            remaining.append(int(r.headers["x-ratelimit-remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        _assert_limited(_post(server), 5)
        # another key has its own budget; health probes are never limited
        assert _post(server, SECOND_KEY).status_code == 200
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        # unauthenticated attempts are limited by client IP (key guessing is throttled too)
        codes = [_post(server, f"guess-{i}").status_code for i in range(6)]
        assert codes[:5] == [403] * 5
        assert codes[5] == 429


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"test-rl-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url(3))
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def test_redis_limit_shared_by_two_processes(
    trained_store: Path, tmp_path: Path, redis_prefix: str
) -> None:
    env = store_env(
        trained_store,
        rate_limit_per_minute=6,
        rate_limit_storage_uri=redis_url(3),
        rate_limit_key_prefix=redis_prefix,
    )
    with running(env, tmp_path / "a") as a, running(env, tmp_path / "b") as b:
        codes = [_post(server).status_code for server in (a, b, a, b, a, b)]
        assert codes == [200] * 6
        _assert_limited(_post(a), 6)
        _assert_limited(_post(b), 6)
    keys = redis.Redis.from_url(redis_url(3)).keys(f"{redis_prefix}*")
    assert keys, "the counters must live in Redis under the configured prefix"
