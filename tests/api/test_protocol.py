"""The guarded protocol's logic, fed bytes directly (the real-server behaviour is tested in
tests/hardening/test_http_limits.py; this covers the branches in process)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from loan_default.api.protocol import GuardedHttpToolsProtocol, HttpLimits

pytestmark = pytest.mark.unit


class _Transport(asyncio.Transport):
    """Collects what the protocol writes; no socket."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _connect(
    state: ServerState, *, max_header_bytes: int = 1024, timeout: float = 5.0, cap: int = 10
) -> tuple[GuardedHttpToolsProtocol, _Transport]:
    config = Config(app=_ok_app, log_config=None)
    config.load()
    proto = GuardedHttpToolsProtocol(
        config=config,
        server_state=state,
        app_state={},
        limits=HttpLimits(max_header_bytes, timeout, cap),
    )
    transport = _Transport()
    proto.connection_made(transport)
    return proto, transport


def test_small_head_is_served_large_head_gets_431() -> None:
    async def run() -> None:
        state = ServerState()
        proto, transport = _connect(state)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 500 + b"\r\n\r\n")
        await asyncio.sleep(0.05)
        assert transport.written.startswith(b"HTTP/1.1 200")
        # the next request on the same connection, head over the limit in one read
        transport.written = b""
        proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 2000 + b"\r\n\r\n")
        assert transport.written.startswith(b"HTTP/1.1 431")
        assert transport.closed
        # a head arriving in pieces is refused once it passes the limit, before it ends
        proto, transport = _connect(state)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        assert not transport.written
        proto.data_received(b"p" * 1100)
        assert transport.written.startswith(b"HTTP/1.1 431")
        assert b'"max_header_bytes":1024' in transport.written
        # a body in the same read as a small head is not counted as head
        proto, transport = _connect(state)
        proto.data_received(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
        )
        await asyncio.sleep(0.05)
        assert transport.written.startswith(b"HTTP/1.1 200")

    asyncio.run(run())


def test_unfinished_head_times_out_with_408() -> None:
    async def run() -> None:
        state = ServerState()
        proto, transport = _connect(state, timeout=0.1)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
        await asyncio.sleep(0.3)
        assert transport.written.startswith(b"HTTP/1.1 408")
        assert transport.closed
        proto.connection_lost(None)
        # a completed head cancels the timer
        proto, transport = _connect(state, timeout=0.1)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.3)
        assert transport.written.startswith(b"HTTP/1.1 200")
        assert b"408" not in transport.written
        # a head that arrives whole never arms the timer (the usual case, kept cheap)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert proto._head_timer is None
        await asyncio.sleep(0.01)
        # kept alive: the next head begun in a later read and never finished
        transport.written = b""
        proto.data_received(b"GET / HTTP/1.1\r\nHo")
        await asyncio.sleep(0.3)
        assert transport.written.startswith(b"HTTP/1.1 408")
        assert transport.closed
        proto.connection_lost(None)
        # pipelined: a whole request and the start of the next one in the same read
        proto, transport = _connect(state, timeout=0.1)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHo")
        await asyncio.sleep(0.3)
        assert transport.written.startswith(b"HTTP/1.1 200")
        assert b"HTTP/1.1 408" in transport.written
        assert transport.closed

    asyncio.run(run())


def test_connections_over_the_cap_get_503() -> None:
    async def run() -> None:
        state = ServerState()
        held = [_connect(state, cap=3) for _ in range(3)]
        proto, transport = _connect(state, cap=3)
        assert transport.written.startswith(b"HTTP/1.1 503")
        assert b"too_many_connections" in transport.written
        assert transport.closed
        proto.data_received(b"GET / HTTP/1.1\r\n\r\n")  # ignored
        proto.connection_lost(None)
        assert len(state.connections) == 3
        for p, _ in held:
            p.connection_lost(None)
        assert not state.connections
        _, transport = _connect(state, cap=3)
        assert not transport.written

    asyncio.run(run())
