"""Faults against a real 1-worker server: rate-limit Redis down, slow and vanishing clients."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import GOOD, JSON_HEADERS, metric_value, running, store_env
from tests.worker.conftest import PrivateRedis

pytestmark = pytest.mark.integration


def test_ratelimit_redis_down_degrades_to_per_process_limit(
    trained_store: Path, tmp_path: Path
) -> None:
    """Issue 11 #9: with its Redis down the limiter used to fail open (300 wrong keys, 300 x 403
    and no 429, readyz 200 with no sign). Now each process limits in memory, readyz and a metric
    say so, and the shared limit comes back by itself."""
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis = PrivateRedis(redis_dir)  # our own server: the shared one on 6379 is never stopped
    redis.start()
    limit = 40
    env = store_env(trained_store, rate_limit_per_minute=limit, rate_limit_storage_uri=redis.url)
    try:
        with running(env, tmp_path / "srv") as server, server.client() as client:

            def predict() -> httpx.Response:
                return client.post("/api/v1/predict", json=GOOD, headers=JSON_HEADERS)

            r = predict()
            assert r.status_code == 200
            assert int(r.headers["x-ratelimit-remaining"]) < limit
            assert client.get("/readyz").json()["data"]["rate_limit"]["status"] == "ok"
            assert metric_value(client.get("/metrics").text, "loan_rate_limit_degraded") == 0

            redis.stop()
            # key guessing stays throttled: the in-memory fallback counts per client IP
            guesses = [
                client.post("/api/v1/predict", json=GOOD, headers={"X-API-Key": f"g{i}"})
                for i in range(limit + 5)
            ]
            codes = [g.status_code for g in guesses]
            assert codes[:limit] == [403] * limit, codes
            assert set(codes[limit:]) == {429}, codes
            statuses = [predict().status_code for _ in range(limit + 5)]
            assert statuses.count(200) == limit
            assert 429 in statuses
            assert 500 not in statuses
            ready = client.get("/readyz")
            assert ready.status_code == 200, "a limiter outage is not an API outage"
            assert ready.json()["data"]["rate_limit"] == {"storage": "redis", "status": "degraded"}
            text = client.get("/metrics").text
            assert metric_value(text, "loan_rate_limit_degraded") == 1
            assert (metric_value(text, "loan_rate_limit_storage_errors_total") or 0) >= 1
            assert server.logs().count("rate-limit storage unavailable") == 1

            redis.start()  # same port, AOF: the counters of before the outage are back
            start = time.monotonic()
            while (
                client.get("/readyz").json()["data"]["rate_limit"]["status"] != "ok"
                and time.monotonic() - start < 20
            ):
                predict()
                time.sleep(0.5)
            assert "rate-limit storage available again" in server.logs()
            assert metric_value(client.get("/metrics").text, "loan_rate_limit_degraded") == 0
            codes = [predict().status_code for _ in range(limit + 1)]
            assert 429 in codes
            r = predict()
            assert r.status_code == 429
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"] == "rate_limited"
            assert "Traceback" not in server.logs()
    finally:
        redis.stop()


def _hung_redis(stop: threading.Event) -> tuple[int, threading.Thread]:
    """A TCP listener that accepts and never answers: a Redis that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    held: list[socket.socket] = []

    def run() -> None:
        with listener:
            while not stop.is_set():
                try:
                    held.append(listener.accept()[0])
                except TimeoutError:
                    continue
            for conn in held:
                conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return int(listener.getsockname()[1]), thread


def test_hung_ratelimit_redis_adds_no_seconds(trained_store: Path, tmp_path: Path) -> None:
    """Issue 11 #9: a hung Redis added +5 s to every keyed request. Now one call waits at most
    RATE_LIMIT_STORAGE_TIMEOUT_S, then the process limits in memory and retries every 5 s."""
    stop = threading.Event()
    port, thread = _hung_redis(stop)
    env = store_env(
        trained_store,
        rate_limit_per_minute=1_000,
        rate_limit_storage_uri=f"redis://127.0.0.1:{port}/0",
        rate_limit_storage_timeout_s=0.2,
    )
    try:
        with running(env, tmp_path / "srv") as server, server.client() as client:
            latencies = []
            for _ in range(30):
                t0 = time.perf_counter()
                r = client.post("/api/v1/predict", json=GOOD, headers=JSON_HEADERS)
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200
                assert "x-ratelimit-remaining" in r.headers  # limited in memory meanwhile
            assert max(latencies) < 1.5, latencies
            assert sum(latencies) < 3, "only the first call (and a retry every 5 s) waits"
            ready = client.get("/readyz").json()["data"]["rate_limit"]
            assert ready["status"] == "degraded"
    finally:
        stop.set()
        thread.join(timeout=5)


def _slow_client(port: int, stop: threading.Event, results: list[str], body_len: int = 200) -> None:
    """Slowloris: declare a body, then trickle it one byte at a time; keep what the server says.

    The server answers 408 and closes while bytes are still coming, so the kernel may follow with
    a reset: the answer read before it counts.
    """
    received = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            head = (
                "POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"X-API-Key: {JSON_HEADERS['X-API-Key']}\r\nContent-Length: {body_len}\r\n\r\n"
            )
            sock.sendall(head.encode())
            sock.settimeout(0.3)
            for _ in range(body_len):
                if stop.is_set():
                    break
                sock.sendall(b" ")
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                received += chunk
    except OSError:
        pass  # reset or broken pipe after the server closed
    results.append(received.decode(errors="replace"))


def test_slow_clients_do_not_block_a_one_worker_server(trained_store: Path, tmp_path: Path) -> None:
    env = store_env(
        trained_store,
        rate_limit_per_minute=1_000_000,
        body_read_timeout_s=2,
        http_keep_alive_timeout_s=1,
    )
    with running(env, tmp_path / "srv", workers=1) as server:
        stop = threading.Event()
        results: list[str] = []
        slow = [
            threading.Thread(target=_slow_client, args=(server.port, stop, results))
            for _ in range(20)
        ]
        for t in slow:
            t.start()
        time.sleep(0.5)  # the slow bodies are being trickled now
        latencies = []
        with server.client() as client:
            for _ in range(50):
                t0 = time.perf_counter()
                r = client.post("/api/v1/predict", json=GOOD, headers=JSON_HEADERS)
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200
        latencies.sort()
        print(
            f"\npredict under 20 slow clients: p50 {latencies[25] * 1000:.1f} ms, max "
            f"{latencies[-1] * 1000:.1f} ms"
        )
        assert latencies[-1] < 1.0, "slow clients delayed other requests"
        for t in slow:
            t.join(timeout=20)
        stop.set()
        assert len(results) == 20
        # every slow body was cut at the deadline with a 408 and a closed connection
        for text in results:
            assert text.startswith("HTTP/1.1 408"), text[:300]
            assert "request_timeout" in text
            assert "connection: close" in text.lower()

        # an idle keep-alive connection is closed by the server after HTTP_KEEP_ALIVE_TIMEOUT_S
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            t0 = time.monotonic()
            data = b""
            while chunk := sock.recv(4096):  # until the server closes the idle connection
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")
            assert data.endswith(b'service is alive"}')
            assert 0.5 < time.monotonic() - t0 < 5

        # a client that disconnects mid-body leaves the server serving
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(
                    b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
                    b'Content-Type: application/json\r\n\r\n{"employed": 1'
                )
        r = httpx.post(f"{server.url}/api/v1/predict", json=GOOD, headers=JSON_HEADERS)
        assert r.status_code == 200
        assert "Traceback" not in server.logs()
