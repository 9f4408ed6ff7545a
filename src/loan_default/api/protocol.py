"""uvicorn's httptools protocol plus the limits it lacks: head size, head read time, connections.

uvicorn (0.5x) with httptools bounds none of these: a request whose headers never end is held
forever, a 50 MB header is buffered whole before the app sees it, and every accepted connection
costs a protocol object and a socket. A reverse proxy usually enforces them, but the service is
also run bare (compose, `loan-default run`), so the server enforces them itself:

- head size (request line + header names and values): over MAX_HEADER_BYTES → 431 and close.
  Checked after each read while the head is incomplete (so memory stays within the limit plus
  one socket read), and exactly once the head is parsed.
- head read time: the head must be complete HEADER_READ_TIMEOUT_S after the connection opens,
  or, on a kept-alive connection, after the read that began the next head without finishing it
  → 408. (A kept-alive connection that sends nothing is closed by uvicorn's keep-alive timeout.)
- connections: past MAX_CONNECTIONS open connections (per worker process) a new one gets 503
  and is closed at once, before anything is read.

Why a subclass rather than h11 (`h11_max_incomplete_event_size` bounds the head, but h11 has no
head timeout either, answers 400 rather than 431, and costs ~25 % of throughput here) or a
proxy in the image: the hot path stays on httptools, and the overrides cost a counter and two
short callbacks per request; a head that arrives whole, the usual case, never arms a timer
(~1 % of a predict's instructions: bench/bench_instructions.py, figures in DESIGN.md). Pure ASGI
middleware cannot do this: the app is only called once the head is complete.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

import httptools
from loguru import logger
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from loan_default.api.errors import error_body
from loan_default.core.config import Settings


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int
    header_read_timeout_s: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_read_timeout_s=settings.header_read_timeout_s,
            max_connections=settings.max_connections,
        )


def _canned(status: bytes, code: str, message: str, detail: dict[str, Any]) -> bytes:
    """A complete response in the API's error envelope, written straight to the socket."""
    body = error_body(code, message, detail)
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\ncontent-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        )
    )


class _HeadRefused(Exception):
    """Raised from a parser callback to abort parsing (httptools wraps it)."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One connection. `limits` is bound by `protocol_factory` (uvicorn passes the rest)."""

    def __init__(self, *args: Any, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        #: True from the connection's start (or the previous message's end) to the head's end.
        self._in_head = True
        self._head_read = 0  # bytes read while in the head: bounds memory
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # --- connection ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport
            self._refused = True
            logger.warning(
                "connection refused: {} open connections (MAX_CONNECTIONS)", len(self.connections)
            )
            transport.write(
                _canned(
                    b"503 Service Unavailable",
                    "too_many_connections",
                    "the server has too many open connections; retry shortly",
                    {"max_connections": self.limits.max_connections},
                )
            )
            transport.close()
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._refused and self.flow is None:
            return  # refused in connection_made: nothing was set up
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_read += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadRefused):
                self._refuse_head_too_large()
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head:
            if self._head_read > self.limits.max_header_bytes:
                self._refuse_head_too_large()
            elif self._head_timer is None and "method" not in (self.scope or ()):
                # a head was begun (uvicorn's on_message_begin made a new scope) and this read
                # did not finish it: time it from now. A head that arrives whole, the usual
                # case, never arms the timer at all.
                self._arm_head_timer()

    # --- parser callbacks ----------------------------------------------------------------
    def on_headers_complete(self) -> None:
        # uvicorn has collected the URL and the headers; their size is the exact check
        size = len(self.url)
        for name, value in self.headers:
            size += len(name) + len(value)
        if size > self.limits.max_header_bytes:
            raise _HeadRefused
        self._in_head = False
        if self._head_timer is not None:
            self._cancel_head_timer()
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        # the next bytes on this connection are the next request's head
        self._in_head = True
        self._head_read = 0

    # --- refusals ------------------------------------------------------------------------
    def _refuse_head_too_large(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        logger.warning("request head over {} bytes refused (431)", self.limits.max_header_bytes)
        self._write_and_close(
            _canned(
                b"431 Request Header Fields Too Large",
                "header_too_large",
                f"request line and headers larger than {self.limits.max_header_bytes} bytes",
                {"max_header_bytes": self.limits.max_header_bytes},
            )
        )

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        self._in_head = False
        self._write_and_close(
            _canned(
                b"408 Request Timeout",
                "request_timeout",
                f"request headers not received within {self.limits.header_read_timeout_s:g} s",
                {"header_read_timeout_s": self.limits.header_read_timeout_s},
            )
        )

    def _write_and_close(self, response: bytes) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            # a pipelined request's response is in flight: do not interleave, just close
            self.cycle.keep_alive = False
            self.transport.close()
            return
        self.transport.write(response)
        self.transport.close()

    def _arm_head_timer(self) -> None:
        """At connection start, and when a kept-alive connection starts its next request (an
        idle kept-alive connection is closed by uvicorn's HTTP_KEEP_ALIVE_TIMEOUT_S)."""
        self._head_timer = self.loop.call_later(
            self.limits.header_read_timeout_s, self._head_timed_out
        )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


def protocol_factory(settings: Settings) -> Any:
    """What `uvicorn.run(http=...)` takes: a picklable callable (workers are spawned)."""
    return functools.partial(GuardedHttpToolsProtocol, limits=HttpLimits.from_settings(settings))
