"""The one per-request middleware (pure ASGI: one layer instead of four).

It does, for every HTTP request: the request id (taken from `X-Request-ID` when it is safe, else
generated, and echoed back), the body size limit (413 from Content-Length before anything is read,
or while a chunked body streams in), security headers, the rate-limit headers the auth dependency
decided, the HTTP metrics, one structured log line (no keys, no payloads), and the last-resort
500: the traceback goes to the log, the client gets the request id and nothing else.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

from fastapi import HTTPException
from loguru import logger
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loan_default.api.errors import error_body, internal_error_response
from loan_default.core.logging import AccessLog, printable
from loan_default.services import metrics

_SAFE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_SECURITY_HEADERS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
#: The interactive docs load their script and styles from a CDN; API answers need nothing.
_API_CSP: Final = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_DOCS_PATHS: Final = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
#: nginx's code for "client closed the request": recorded in the metrics and the access line,
#: never sent (there is nobody to send it to).
CLIENT_CLOSED_REQUEST: Final = 499


class _BodyTooLarge(HTTPException):
    """Raised from `receive`: FastAPI re-raises HTTPExceptions met while reading the body."""


class _BodyTimeout(HTTPException):
    """The body did not arrive within the read timeout (a slow or stalled client): 408."""


def _route_template(scope: Scope) -> str:
    """The matched route's full path template (`/api/v1/predict/batch/{job_id}`), for labels.

    FastAPI >= 0.16x keeps included routers nested: the leaf route's own `path` lacks the
    include prefixes, the effective route context has the full template.
    """
    context = (scope.get("fastapi") or {}).get("effective_route_context")
    template = getattr(context, "path_format", None)
    if template:
        return str(template)
    route = scope.get("route")
    return str(getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched")


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_limits: Mapping[str, int] | None = None,
        body_read_timeout_s: float = 30.0,
        body_min_rate_bytes_s: float = 1000.0,
        access_log: AccessLog | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        #: Paths whose body may be larger (the batch CSV upload), as its router declares them.
        self.body_limits = dict(body_limits or {})
        self.body_read_timeout_s = body_read_timeout_s
        self.body_min_rate_bytes_s = body_min_rate_bytes_s
        self.access_log = access_log
        self.http_metrics = metrics.HttpRecorder()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id: str | None = None
        content_length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _SAFE_REQUEST_ID.fullmatch(candidate):
                    request_id = candidate
            elif name == b"content-length":
                content_length = value
        if request_id is None:
            request_id = uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        method: str = scope["method"]
        path: str = scope["path"]
        status = 500
        started = False
        sent: float | None = None  # when the last body message went out
        rid_header = (b"x-request-id", request_id.encode())

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started, sent
            if message["type"] != "http.response.start":
                await send(message)
                if not message.get("more_body"):
                    sent = time.perf_counter()
                return
            started = True
            status = message["status"]
            headers = list(message.get("headers", ()))
            headers.append(rid_header)
            headers.extend(_SECURITY_HEADERS)
            if path not in _DOCS_PATHS:
                headers.append(_API_CSP)
            decision = state.get("rate_limit")
            if decision is not None:
                headers.extend(decision.headers())
            await send({**message, "headers": headers})

        limit = self.body_limits.get(path, self.max_body_bytes)
        try:
            if method in _BODY_METHODS and self._too_large(content_length, limit):
                await self._reject_large(send_wrapper, limit)
            elif method in _BODY_METHODS:
                guarded = self._guarded(receive, limit=limit, count=content_length is None)
                await self.app(scope, guarded, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        except _BodyTooLarge:
            if not started:
                await self._reject_large(send_wrapper, limit)
        except _BodyTimeout:
            if not started:
                await self._reject_slow(send_wrapper)
        except ClientDisconnect:
            # the client went away mid-body: its problem, not ours (no traceback, not a 500)
            status = CLIENT_CLOSED_REQUEST
            logger.info(
                "client disconnected before its request body was complete: {} {} (request {})",
                method,
                printable(path),
                request_id,
            )
        except Exception as exc:
            logger.opt(exception=exc).error(
                "unhandled error in {} {} (request {})", method, printable(path), request_id
            )
            if not started:
                await internal_error_response(request_id)(scope, receive, send_wrapper)
        finally:
            # until the response was complete: a background task after it (a batch submit's
            # drift sample) is not the client's wait
            elapsed = (sent if sent is not None else time.perf_counter()) - start
            handler = _route_template(scope)
            if path not in metrics.UNMETERED_PATHS:
                self.http_metrics.observe(
                    handler=handler, method=method, status=status, seconds=elapsed
                )
            if self.access_log is not None:
                self.access_log(
                    request_id=request_id,
                    method=method,
                    path=path,
                    route=handler,
                    status=status,
                    latency_ms=round(elapsed * 1000, 3),
                    model_version=state.get("model_version"),
                )

    def _too_large(self, content_length: bytes | None, limit: int) -> bool:
        if content_length is None:
            return False
        try:
            return int(content_length) > limit
        except ValueError:
            return True  # a malformed length is refused like an oversized one

    async def _reject_large(self, send: Send, limit: int) -> None:
        await _refuse(
            send,
            413,
            "payload_too_large",
            f"request body larger than {limit} bytes",
            {"max_body_bytes": limit},
        )

    def _slow_message(self) -> str:
        return (
            f"request body not received in time (within {self.body_read_timeout_s:g} s, then at "
            f"{self.body_min_rate_bytes_s:g} bytes/s or more)"
        )

    async def _reject_slow(self, send: Send) -> None:
        await _refuse(
            send,
            408,
            "request_timeout",
            self._slow_message(),
            {
                "body_read_timeout_s": self.body_read_timeout_s,
                "body_min_rate_bytes_s": self.body_min_rate_bytes_s,
            },
        )

    def _guarded(self, receive: Receive, *, limit: int, count: bool) -> Receive:
        """Bound the time the body takes to arrive (a slowloris trickling bytes gets a 408 and
        its connection closed) and, when `count` (a chunked body), its size.

        Two deadlines, the earlier wins. The total budget is BODY_READ_TIMEOUT_S after the
        request's start, stretched in proportion for upload routes whose limit is above
        MAX_BODY_BYTES (100 MB: 1,500 s). The rate floor: after a grace of BODY_READ_TIMEOUT_S,
        byte n must have arrived by grace + n / BODY_MIN_RATE_BYTES_S, so a body trickled at
        1 byte/s is cut soon after the grace, not after the whole budget. Once the body is
        complete, later `receive` calls (disconnect listeners) pass through untimed.
        """
        seen = 0
        complete = False
        budget = self.body_read_timeout_s * max(1.0, limit / self.max_body_bytes)
        start = asyncio.get_running_loop().time()
        total_deadline = start + budget
        grace_end = start + self.body_read_timeout_s
        rate = self.body_min_rate_bytes_s

        async def wrapped() -> Message:
            nonlocal seen, complete
            if complete:
                return await receive()
            deadline = min(total_deadline, grace_end + seen / rate)
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _BodyTimeout(
                    408, self._slow_message(), headers={"Connection": "close"}
                ) from None
            if message["type"] != "http.request":
                return message
            complete = not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if count and seen > limit:
                raise _BodyTooLarge(413, f"request body larger than {limit} bytes")
            return message

        return wrapped


async def _refuse(send: Send, status: int, code: str, message: str, detail: Any) -> None:
    """An error envelope sent straight to the client, closing the connection (the body was not
    read, or not in full, so the connection cannot be reused)."""
    body = error_body(code, message, detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
