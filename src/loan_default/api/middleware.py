"""The one per-request middleware (pure ASGI: one layer instead of four).

It does, for every HTTP request: the request id (taken from `X-Request-ID` when it is safe, else
generated, and echoed back), the body size limit (413 from Content-Length before anything is read,
or while a chunked body streams in), security headers, the rate-limit headers the auth dependency
decided, the HTTP metrics, one structured log line (no keys, no payloads), and the last-resort
500: the traceback goes to the log, the client gets the request id and nothing else.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Final

from fastapi import HTTPException
from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loan_default.api.errors import error_body, internal_error_response
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


class _BodyTooLarge(HTTPException):
    """Raised from `receive`: FastAPI re-raises HTTPExceptions met while reading the body."""


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
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, access_log: bool = True) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
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
        rid_header = (b"x-request-id", request_id.encode())

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
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
                message = {**message, "headers": headers}
            await send(message)

        # Upload routes (the batch CSV) may raise the limit: `app.state.body_limits[path]`.
        limits = getattr(getattr(scope.get("app"), "state", None), "body_limits", None)
        limit = limits.get(path, self.max_body_bytes) if limits else self.max_body_bytes
        try:
            if method in _BODY_METHODS and self._too_large(content_length, limit):
                await self._reject_large(send_wrapper, limit)
            elif method in _BODY_METHODS and content_length is None:
                await self.app(scope, self._limited(receive, limit), send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        except _BodyTooLarge:
            if not started:
                await self._reject_large(send_wrapper, limit)
        except Exception as exc:
            logger.opt(exception=exc).error(
                "unhandled error in {} {} (request {})", method, path, request_id
            )
            if not started:
                await internal_error_response(request_id)(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            handler = _route_template(scope)
            if path not in metrics.UNMETERED_PATHS:
                self.http_metrics.observe(
                    handler=handler, method=method, status=status, seconds=elapsed
                )
            if self.access_log:
                logger.info(
                    "{method} {path} {status} {latency_ms}ms",
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
        body = error_body(
            "payload_too_large",
            f"request body larger than {limit} bytes",
            {"max_body_bytes": limit},
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _limited(self, receive: Receive, limit: int) -> Receive:
        """Count a streamed (chunked) body and stop it at the limit."""
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(413, f"request body larger than {limit} bytes")
            return message

        return wrapped
