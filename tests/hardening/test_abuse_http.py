"""Issue 11, HTTP classes replayed under a budget: the API's RSS may not grow more than 200 MB and
/healthz keeps answering fast while each abusive request is in flight.

One real single-worker server (the event loop is the shared resource being attacked), no key
needed for most classes (they are anonymous attacks). Loops are bounded, targets are 127.0.0.1.
The /healthz budget is 100 ms for the median probe and 500 ms for the slowest one: the median is
the stated bar, the maximum leaves room for a scheduler hiccup on a shared CI core.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Server, metric_value, running, store_env
from tests.conftest import TEST_API_KEY
from tests.hardening.test_soak import rss_kb

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RSS_BUDGET_KB = 200 * 1024
HEALTHZ_MEDIAN_S = 0.100
HEALTHZ_MAX_S = 0.500


@pytest.fixture(scope="module")
def server(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = store_env(
        trained_store,
        environment="development",  # the log format of issue 11 #5
        rate_limit_per_minute=1_000_000,
        header_read_timeout_s=2,
        body_read_timeout_s=2,
        body_min_rate_bytes_s=500,
    )
    with running(env, tmp_path_factory.mktemp("abuse")) as srv:
        yield srv


def _under_budget(server: Server, abuse: Callable[[], None], *, label: str) -> None:
    """Run `abuse` in a thread while probing /healthz on an open connection; check both budgets."""
    with httpx.Client(base_url=server.url, timeout=5) as probe:
        for _ in range(20):  # warm: the connection, the route, the allocator
            probe.get("/healthz")
        rss_before = rss_kb(server.proc.pid)
        peak = rss_before
        latencies: list[float] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                abuse()
            except BaseException as exc:  # reported by the test thread
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        while thread.is_alive():
            t0 = time.perf_counter()
            r = probe.get("/healthz")
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200
            peak = max(peak, rss_kb(server.proc.pid))
            time.sleep(0.02)
        thread.join()
    assert not errors, errors
    growth_mb = (peak - rss_before) / 1024
    print(
        f"\n{label}: {len(latencies)} probes, healthz median "
        f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms; "
        f"RSS {rss_before // 1024} -> peak {peak // 1024} MB (+{growth_mb:.0f})"
    )
    assert len(latencies) >= 3, "the abuse ended before it could be measured"
    assert peak - rss_before < RSS_BUDGET_KB, f"{label}: RSS grew {growth_mb:.0f} MB"
    assert statistics.median(latencies) < HEALTHZ_MEDIAN_S, latencies
    assert max(latencies) < HEALTHZ_MAX_S, latencies


def _send_big_head(port: int, size: int) -> bytes:
    head = b"GET /api/v1/model/info HTTP/1.1\r\nHost: x\r\nX-API-Key: "
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(head)
            block = b"k" * 65536
            for _ in range(size // len(block)):
                sock.sendall(block)
        with contextlib.suppress(OSError):
            out = sock.recv(4096)
    return out


def test_huge_headers(server: Server) -> None:
    """#7: four concurrent 50 MB headers raised RSS 349 -> 713 MB; now 431 after 16 kB."""

    def abuse() -> None:
        threads = [
            threading.Thread(target=_send_big_head, args=(server.port, 50_000_000))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        time.sleep(0.3)

    _under_budget(server, abuse, label="4 x 50 MB headers")
    assert "431" in server.logs() or "request head over" in server.logs()


def test_unfinished_heads(server: Server) -> None:
    """#6: 2,000 connections with unfinished heads were held for minutes; now each is closed
    after HEADER_READ_TIMEOUT_S (2 s here), and none holds more than a few kB."""
    closed: list[int] = []

    def abuse() -> None:
        socks = []
        for _ in range(500):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(sock)
        deadline = time.monotonic() + 8
        for sock in socks:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(OSError):
                if sock.recv(4096).startswith(b"HTTP/1.1 408"):
                    closed.append(1)
            sock.close()

    _under_budget(server, abuse, label="500 unfinished heads")
    assert len(closed) == 500, f"only {len(closed)} of 500 got their 408"


def test_trickled_upload(server: Server) -> None:
    """#6: a body at 1 byte/s on the upload route was not cut at 130 s; now cut at the rate
    floor (here 2 s grace, then 500 B/s)."""
    answers: list[bytes] = []

    def abuse() -> None:
        head = (
            "POST /api/v1/predict/batch/file HTTP/1.1\r\nHost: x\r\n"
            f"X-API-Key: {TEST_API_KEY}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            "Content-Length: 50000000\r\n\r\n"
            '--b\r\nContent-Disposition: form-data; name="file"; filename="p.csv"\r\n'
            "Content-Type: text/csv\r\n\r\nemployed,bank_balance,annual_salary\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head)
            sock.settimeout(0.5)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 15:
                with contextlib.suppress(OSError):
                    sock.sendall(b"1")
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                answers.append(data)
                break

    _under_budget(server, abuse, label="trickled upload")
    assert answers, "the trickled upload was not cut within 15 s"
    assert answers[0].startswith(b"HTTP/1.1 408")


def test_format_string_paths(server: Server) -> None:
    """#5: `{status:>30000000}` in a path wrote a 30 MB log line."""

    def abuse() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i in range(100):
                width = (30_000_000, 300_000_000)[i % 2]
                r = client.get(f"/x/%7Bstatus:%3E{width}%7D%7Bnope%7D%0d%0a")
                assert r.status_code == 404

    before = len(server.logs())
    _under_budget(server, abuse, label="format-string paths")
    assert max(len(line) for line in server.logs()[before:].splitlines()) < 2000


def test_disconnects_mid_body(server: Server) -> None:
    """#10: each client gone mid-body was an ERROR with a traceback and a 500 in the metrics;
    1,000 of them now leave nothing but 499s."""

    def abuse() -> None:
        # at least 1,000, and for at least 0.5 s: on a fast machine 1,000 took ~40 ms, too
        # short for the /healthz probes that measure the server meanwhile
        sent, until = 0, time.monotonic() + 0.5
        while sent < 1000 or time.monotonic() < until:
            sent += 1
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(
                    b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                    b"\r\nX-API-Key: " + TEST_API_KEY.encode() + b"\r\nContent-Length: 1000\r\n"
                    b'\r\n{"employed": 1'
                )

    _under_budget(server, abuse, label="1000 disconnects mid-body")
    time.sleep(1)
    text = httpx.get(f"{server.url}/metrics").text
    assert (metric_value(text, "http_requests_total", {"status": "499"}) or 0) >= 900
    assert metric_value(text, "http_requests_total", {"status": "500"}) is None
    assert "Traceback" not in server.logs()
