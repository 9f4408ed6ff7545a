"""One error envelope for every failure: `{"success": false, "error", "message", "detail"}`.

Domain errors (`LoanDefaultError` subclasses) carry their status and code; FastAPI's validation
errors keep their list under `detail` and name each bad field in `message`; Starlette's HTTP
errors (404, 405...) are mapped to a code. Unexpected exceptions never reach these handlers with
their text: the middleware logs the traceback and answers a generic 500 with the request id.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from loguru import logger
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from loan_default.core.errors import LoanDefaultError
from loan_default.services.batch.json_input import too_many_errors

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "service_unavailable",
}


class Unauthorized(LoanDefaultError):
    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}


class Forbidden(LoanDefaultError):
    status_code = 403
    code = "forbidden"


class InsufficientScope(Forbidden):
    """A valid key without the scope the route needs (OAuth's name for it, RFC 6750)."""

    code = "insufficient_scope"


class RateLimited(LoanDefaultError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int, detail: Any = None) -> None:
        super().__init__(message, detail=detail)
        self.headers = {"Retry-After": str(retry_after_s)}


class UnsupportedMediaType(LoanDefaultError):
    status_code = 415
    code = "unsupported_media_type"


def body_validation_error(exc: ValidationError, cap: int) -> RequestValidationError:
    """A body model's errors as FastAPI's 422 (`loc` under `body`): at most `cap` of them, then
    an entry saying how many were left out (BATCH_MAX_REPORTED_ERRORS)."""
    errors: list[Any] = [
        {**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)[:cap]
    ]
    if exc.error_count() > cap:
        errors.append(too_many_errors(exc.error_count(), cap, ["body"]))
    return RequestValidationError(errors)


def duplicate_key_error(array: str, index: int, key: str) -> RequestValidationError:
    """The 422 for `key` repeated inside item `index` of the body's `array`."""
    return RequestValidationError(
        [
            {
                "type": "duplicate_key",
                "loc": ("body", array, index, key),
                "msg": f"Key {key!r} appears more than once in this object",
                "input": None,
            }
        ]
    )


def error_body(code: str, message: str, detail: Any = None) -> bytes:
    return orjson.dumps(
        {"success": False, "error": code, "message": message, "detail": detail},
        option=orjson.OPT_SERIALIZE_NUMPY,
        default=str,
    )


def error_response(
    status: int,
    code: str,
    message: str,
    detail: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        error_body(code, message, detail),
        status_code=status,
        media_type="application/json",
        headers=dict(headers) if headers else None,
    )


def _clean_validation_errors(errors: Any) -> Iterator[dict[str, Any]]:
    """FastAPI's error list, JSON-safe: `ctx` values as text, bulky `input` values dropped, and
    an unknown field's message naming it (pydantic says only "Extra inputs are not permitted").
    A generator, so only the errors that fit in the answer are converted."""
    for err in errors:
        loc = list(err.get("loc", ()))
        item: dict[str, Any] = {
            "type": err.get("type"),
            "loc": loc,
            "msg": f"unknown field {str(loc[-1])!r}"
            if err.get("type") == "extra_forbidden" and loc
            else err.get("msg"),
        }
        value = err.get("input")
        if (
            value is None
            or isinstance(value, bool | float)
            # orjson refuses integers beyond 64 bits (a 500 before this check)
            or (isinstance(value, int) and -(2**63) <= value < 2**64)
            or (isinstance(value, str) and len(value) <= 100)
        ):
            item["input"] = value
        if err.get("ctx"):
            item["ctx"] = {k: str(v) for k, v in err["ctx"].items()}
        yield item


def _field_name(loc: list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path")]
    return ".".join(parts) if parts else (str(loc[0]) if loc else "request")


def _phrase(err: dict[str, Any]) -> str:
    """One error as the 422's `message` names it."""
    if err["type"] == "json_invalid":
        return "body (not valid JSON)"
    if err["type"] == "extra_forbidden" and err["loc"]:
        inside = _field_name(err["loc"][:-1])
        return err["msg"] if inside in ("body", "request") else f"{err['msg']} in {inside}"
    return f"{_field_name(err['loc'])} ({err['msg']})"


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoanDefaultError)  # nosec B101 - type narrowing for mypy on an invariant, not input validation
    return error_response(
        exc.status_code, exc.code, exc.message, exc.detail, getattr(exc, "headers", None)
    )


#: Used when the app carries no settings (unit tests of the handlers).
_DEFAULT_MAX_DETAIL_BYTES = 65_536
#: At most this many fields are named in a 422's `message` (the list is in `detail`).
_MAX_FIELDS_IN_MESSAGE = 10


def _capped(
    errors: Iterator[dict[str, Any]], total: int, max_bytes: int
) -> tuple[list[dict[str, Any]], int]:
    """The leading errors whose JSON fits in `max_bytes`, and how many were left out.

    Pydantic reports every bad field: a body crafted to fail thousands of checks would otherwise
    come back as a response larger than itself (issue 11: 278 MB for a 2 MB request).
    """
    kept: list[dict[str, Any]] = []
    size = 0
    for err in errors:
        size += len(orjson.dumps(err, default=str)) + 1
        if size > max_bytes and kept:
            break
        kept.append(err)
    return kept, total - len(kept)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # nosec B101 - type narrowing for mypy on an invariant, not input validation
    settings = getattr(request.app.state, "settings", None)
    max_bytes = getattr(settings, "max_error_detail_bytes", _DEFAULT_MAX_DETAIL_BYTES)
    errors = exc.errors()
    detail, left_out = _capped(_clean_validation_errors(errors), len(errors), max_bytes)
    named = detail[:_MAX_FIELDS_IN_MESSAGE]
    fields = ", ".join(_phrase(e) for e in named)
    more = len(detail) - len(named) + left_out
    if more:
        fields += f" and {more} more"
    if left_out:
        detail.append({"type": "detail_truncated", "omitted_errors": left_out})
    return error_response(422, "validation_error", f"invalid request: {fields}", detail)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # nosec B101 - type narrowing for mypy on an invariant, not input validation
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    return error_response(exc.status_code, code, message, None, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """Last resort (the middleware normally catches first): log it, tell nothing."""
    request_id = getattr(request.state, "request_id", None)
    logger.opt(exception=exc).error("unhandled error (request {})", request_id)
    return internal_error_response(request_id)


def internal_error_response(request_id: str | None) -> Response:
    """The request id header is added by the middleware (it wraps every response)."""
    return error_response(
        500,
        "internal_error",
        "internal server error; quote the request id when reporting it",
        {"request_id": request_id},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(LoanDefaultError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
