"""Dependencies of the routes, read from `app.state` (tests hand collaborators to `create_app`).

All are `async def`: a plain `def` dependency runs in the threadpool, which measured ~230-290 us per
request here against a few microseconds inline.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from loan_default.api.errors import (
    Forbidden,
    InsufficientScope,
    RateLimited,
    Unauthorized,
    UnsupportedMediaType,
)
from loan_default.api.ratelimit import RateLimiter
from loan_default.core import keys
from loan_default.core.config import Settings
from loan_default.services.drift import DriftMonitor
from loan_default.services.model import ModelService

API_KEY_HEADER = "x-api-key"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: `key_id` is a digest prefix of the API key, never the key itself;
    `scopes` what the key was configured with (core/keys.py)."""

    key_id: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class KeyTable:
    """What `authorize` compares against, built once by `create_app` (`app.state.api_keys`)."""

    digests: tuple[str, ...]
    scopes: dict[str, frozenset[str]]
    """Read only after a digest matched: the lookup's timing tells nothing the answer does not."""

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyTable:
        scopes = settings.key_scopes
        return cls(tuple(sorted(scopes)), scopes)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_model_service(request: Request) -> ModelService:
    service: ModelService = request.app.state.model_service
    return service


async def get_drift_monitor(request: Request) -> DriftMonitor:
    monitor: DriftMonitor = request.app.state.drift
    return monitor


async def authorize(request: Request) -> Principal:
    """API key check (sha256 digests, constant-time compare) plus the rate limit.

    The digest is compared with every accepted one, no early exit, so the time taken does not
    tell how far down the list a key is. The limit is counted per valid key, else per client IP,
    before the key is judged: so key guessing from one address is throttled like any other
    traffic. Scopes are checked after this (`require_scope`), so a key outside its scope still
    counts against its limit.
    """
    state = request.app.state
    key = request.headers.get(API_KEY_HEADER)
    key_id: str | None = None
    scopes: frozenset[str] = frozenset()
    if key:
        digest = hashlib.sha256(key.encode()).hexdigest()
        table: KeyTable = state.api_keys
        matched = False
        for accepted in table.digests:
            matched |= hmac.compare_digest(digest, accepted)
        if matched:
            key_id = digest[:16]
            scopes = table.scopes[digest]
    limiter: RateLimiter = state.limiter
    decision = await limiter.hit(
        f"key:{key_id}" if key_id else f"ip:{request.client.host if request.client else '-'}"
    )
    request.state.rate_limit = decision
    if not decision.allowed:
        raise RateLimited(
            f"rate limit of {decision.limit} requests per minute exceeded; "
            f"retry in {decision.retry_after_s} s",
            retry_after_s=decision.retry_after_s,
            detail={"limit": decision.limit, "retry_after_s": decision.retry_after_s},
        )
    if not key:
        raise Unauthorized("missing API key: send it in the X-API-Key header")
    if key_id is None:
        raise Forbidden("invalid API key")
    request.state.key_id = key_id
    return Principal(key_id, scopes)


def check_scope(principal: Principal, scope: str) -> None:
    """403 naming `scope` unless the key holds it (the predict route calls this inline)."""
    if scope not in principal.scopes:
        raise InsufficientScope(
            f"this API key lacks the {scope!r} scope", detail={"required_scope": scope}
        )


def require_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the caller (via `authorize`) if its key holds `scope`, else 403.

    `Depends(require_scope(AUDIT))` on a route or router. It depends on `authorize` itself, and
    FastAPI solves a dependency once per request, so under the routers' own
    `Depends(authorize)` the key is still checked (and rate-limited) once.
    """
    if scope not in keys.SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known: {', '.join(keys.SCOPES)}")

    async def scoped(principal: Annotated[Principal, Depends(authorize)]) -> Principal:
        check_scope(principal, scope)
        return principal

    scoped.__name__ = f"require_{scope}_scope"
    return scoped


async def require_json(request: Request) -> None:
    """415 unless the body is declared JSON (checked before the body is parsed)."""
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"content type {media or '(none)'!r} is not supported; send application/json"
        )


SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelServiceDep = Annotated[ModelService, Depends(get_model_service)]
DriftMonitorDep = Annotated[DriftMonitor, Depends(get_drift_monitor)]
