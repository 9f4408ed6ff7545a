"""Issue 11, HTTP surface: one regression test per defect, each against a real uvicorn server.

The process is what is under test here: the head limits live in the uvicorn protocol, the log
lines in the server's stderr, the 499 in the metrics of a client that really went away.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import JSON_HEADERS, Server, metric_value, running, store_env
from tests.conftest import TEST_API_KEY

pytestmark = pytest.mark.integration


def _exchange(port: int, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or `wait` passes without data)."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass
    return out


@pytest.fixture(scope="module")
def limited(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Development log format (the default, where #5 was), short head and body timeouts."""
    env = store_env(
        trained_store,
        environment="development",
        rate_limit_per_minute=1_000_000,
        header_read_timeout_s=1,
        body_read_timeout_s=1,
        body_min_rate_bytes_s=200,
        max_header_bytes=8192,
    )
    with running(env, tmp_path_factory.mktemp("limited")) as server:
        yield server


def _send_until_answered(port: int, data: bytes, *, chunk: int = 16384) -> tuple[bytes, int]:
    """Send `data` in chunks, looking for an answer between them, as a client would that reads
    while it writes; returns (answer, bytes sent). The server closes with the rest unread, so
    the kernel may reset the connection: what was read before counts."""
    out, sent = b"", 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            while sent < len(data):
                sock.sendall(data[sent : sent + chunk])
                sent += chunk
                with contextlib.suppress(BlockingIOError):
                    out += sock.recv(65536, socket.MSG_DONTWAIT)
                if out:
                    break
            sock.settimeout(3)
            while piece := sock.recv(65536):
                out += piece
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            pass
    return out, min(sent, len(data))


# --- 5: log injection -----------------------------------------------------------------------
def test_paths_are_never_log_format_strings(limited: Server) -> None:
    before = len(limited.logs())
    probes = {
        "/x/%7Bstatus:%3E3000000%7D": "/x/{status:>3000000}",  # was a 3 MB line
        "/nothing2/%7Bnope%7D": "/nothing2/{nope}",  # was a KeyError and no access line
        "/a%0d%0aFAKE-LINE%1b[31m": r"/a\r\nFAKE-LINE\x1b[31m",  # was a split line
    }
    for raw in probes:
        reply = _exchange(limited.port, f"GET {raw} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), wait=2)
        assert reply.startswith(b"HTTP/1.1 404"), reply[:100]
    time.sleep(0.3)
    new = limited.logs()[before:]
    assert "Traceback" not in new
    assert "KeyError" not in new
    lines = new.splitlines()
    assert max(len(line) for line in lines) < 2000
    for logged in probes.values():
        assert any(f"GET {logged} 404" in line for line in lines), (logged, new[-2000:])
    assert not any(line.startswith("FAKE-LINE") for line in lines)
    assert "\x1b[31m" not in new


# --- 6: head read timeout, connection cap, minimum body rate --------------------------------
def test_unfinished_head_is_closed_after_the_timeout(limited: Server) -> None:
    t0 = time.monotonic()
    reply = _exchange(limited.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", wait=10)
    elapsed = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"request_timeout" in reply
    assert b"connection: close" in reply.lower()
    assert 0.8 < elapsed < 5, elapsed
    # a connection that sends nothing at all is closed too
    t0 = time.monotonic()
    assert _exchange(limited.port, b"", wait=10).startswith(b"HTTP/1.1 408")
    assert time.monotonic() - t0 < 5


def test_trickled_upload_is_cut_at_the_minimum_rate(limited: Server) -> None:
    """1 byte/s on the upload route: its total budget is 50 s here (1,500 s by default), the
    rate floor (200 B/s after a 1 s grace) cuts it within a few seconds."""
    head = (
        "POST /api/v1/predict/batch/file HTTP/1.1\r\nHost: x\r\n"
        f"X-API-Key: {TEST_API_KEY}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 100000\r\n\r\n"
        '--b\r\nContent-Disposition: form-data; name="file"; filename="p.csv"\r\n'
        "Content-Type: text/csv\r\n\r\nemployed,bank_balance,annual_salary\n"
    ).encode()
    t0 = time.monotonic()
    reply = b""
    with socket.create_connection(("127.0.0.1", limited.port), timeout=15) as sock:
        sock.sendall(head)
        sock.settimeout(1.0)
        try:
            for _ in range(15):
                sock.sendall(b"x")
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                reply += chunk
                # the head and the body may come in separate segments: read to the close
                with contextlib.suppress(TimeoutError, ConnectionResetError):
                    while more := sock.recv(4096):
                        reply += more
                break
        except (ConnectionResetError, BrokenPipeError):
            pass
    elapsed = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408"), reply[:300]
    assert b"request_timeout" in reply
    assert b"200 bytes/s" in reply
    assert elapsed < 8, elapsed


def test_connection_cap(trained_store: Path, tmp_path: Path) -> None:
    cap = 20
    env = store_env(
        trained_store, rate_limit_per_minute=1_000_000, max_connections=cap, header_read_timeout_s=2
    )
    with running(env, tmp_path) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(cap + 5)]
        try:
            time.sleep(0.3)
            reply = _exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", wait=3)
            assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
            assert b"too_many_connections" in reply
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.3)
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        # and idle connections free their slot by themselves after the head timeout
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(cap)]
        try:
            time.sleep(3)
            assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        finally:
            for sock in idle:
                sock.close()
        assert "Traceback" not in server.logs()


# --- 7: head size ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", [9_000, 5_000_000])
def test_oversized_head_gets_431(limited: Server, size: int) -> None:
    request = (
        b"GET /api/v1/model/info HTTP/1.1\r\nHost: x\r\nX-API-Key: " + b"k" * size + b"\r\n\r\n"
    )
    t0 = time.monotonic()
    reply, sent = _send_until_answered(limited.port, request)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    assert b'"max_header_bytes":8192' in reply
    assert time.monotonic() - t0 < 5
    assert sent < 1_000_000, "refused before megabytes were read"


def test_head_just_under_the_limit_is_served(limited: Server) -> None:
    r = httpx.get(f"{limited.url}/healthz", headers={"X-Pad": "p" * 7000}, timeout=5)
    assert r.status_code == 200
    # and a POST whose head and body arrive in one read is not mistaken for a large head
    # (padded with JSON whitespace: an unknown field would be refused by name)
    body = b'{"employed": 1, "bank_balance": 1.0, "annual_salary": 100.0' + b" " * 60000
    r = httpx.post(
        f"{limited.url}/api/v1/predict", content=body + b"}", headers=JSON_HEADERS, timeout=5
    )
    assert r.status_code == 200, r.text


# --- 10: client gone mid-body ---------------------------------------------------------------
def test_client_disconnect_mid_body_is_499_without_traceback(limited: Server) -> None:
    before = len(limited.logs())
    head = (
        "POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {TEST_API_KEY}\r\nContent-Length: 500\r\n\r\n"
        '{"employed": 1'
    ).encode()
    with socket.create_connection(("127.0.0.1", limited.port)) as sock:
        sock.sendall(head)
        time.sleep(0.2)
    time.sleep(0.5)
    text = httpx.get(f"{limited.url}/metrics").text
    assert (
        metric_value(text, "http_requests_total", {"handler": "/api/v1/predict", "status": "499"})
        == 1.0
    )
    assert metric_value(text, "http_requests_total", {"status": "500"}) is None
    new = limited.logs()[before:]
    assert "client disconnected" in new
    assert "Traceback" not in new
    assert "ERROR" not in new


# --- 11: HEAD on probes, missing SQLite store -----------------------------------------------
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_head_on_probes(limited: Server, path: str) -> None:
    r = httpx.head(f"{limited.url}{path}", timeout=5)
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-type"] == httpx.get(f"{limited.url}{path}").headers["content-type"]


def test_missing_sqlite_store_is_warned_about(trained_store: Path, tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "mlflow.db"
    env = store_env(trained_store, mlflow_tracking_uri=f"sqlite:///{missing}")
    server = Server(env, tmp_path / "srv")
    try:
        server.wait("/healthz")
        deadline = time.monotonic() + 20
        while "does not exist" not in server.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        logs = server.logs()
        warning = next(line for line in logs.splitlines() if "does not exist" in line)
        assert "WARNING" in warning
        assert str(missing) in warning
        r = httpx.get(f"{server.url}/readyz", timeout=5)
        assert r.status_code == 503
        assert r.json()["data"]["reason"] in {"loading", "alias_not_set"}
    finally:
        server.stop()
