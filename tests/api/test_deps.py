"""Scoped API keys through the real app in-process: who may call what, and the 401/403 answers."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends

from loan_default.api.app import API_PREFIX, create_app
from loan_default.api.deps import Principal, authorize, require_scope
from loan_default.core.config import Settings
from loan_default.core.keys import AUDIT
from loan_default.services.model import ModelService
from tests.api.conftest import GOOD, asgi_requests
from tests.conftest import TEST_API_KEY, RecordingDispatcher, make_settings, queued_batch

pytestmark = pytest.mark.integration

SCORE_KEY = TEST_API_KEY  # no suffix: `score` only, as every key before scopes
AUDIT_KEY = "audit-key-0123456789"
HASHED_KEY = "hashed-key-0123456789"  # only its digest is configured, with score+audit
PREDICT = f"{API_PREFIX}/predict"
AUDIT_ROUTE = f"{API_PREFIX}/test-audit"


def _app(store: Path, bundle: Any, **overrides: object) -> Any:
    """The real app plus one test-only route needing `audit` (the decision routes come later),
    mounted like every /api/v1 router: `authorize` on the router, the scope on the route."""
    digest = hashlib.sha256(HASHED_KEY.encode()).hexdigest()
    values: dict[str, object] = {
        "api_keys": f"{SCORE_KEY},{AUDIT_KEY}:audit",
        "api_key_hashes": f"{digest}:score+audit",
        **queued_batch(),
        **overrides,
    }
    settings: Settings = make_settings(store, **values)
    app = create_app(
        settings,
        model_service=ModelService(settings=settings, bundle=bundle),
        dispatcher=RecordingDispatcher(),
    )
    router = APIRouter()

    @router.get("/test-audit")
    async def audit_only(
        principal: Annotated[Principal, Depends(require_scope(AUDIT))],
    ) -> dict[str, Any]:
        return {"key_id": principal.key_id, "scopes": sorted(principal.scopes)}

    app.include_router(router, prefix=API_PREFIX, dependencies=[Depends(authorize)])
    return app


@pytest.fixture(scope="module")
def app(trained_store: Path, bundle: Any) -> Any:
    return _app(trained_store, bundle, rate_limit_per_minute=1_000_000)


def _key(key: str) -> dict[str, Any]:
    return {"headers": {"X-API-Key": key}}


def _lacks(response: Any, scope: str) -> None:
    assert response.status_code == 403, response.text
    assert response.json() == {
        "success": False,
        "error": "insufficient_scope",
        "message": f"this API key lacks the '{scope}' scope",
        "detail": {"required_scope": scope},
    }


def test_a_score_key_scores_but_is_refused_where_audit_is_needed(app: Any) -> None:
    predicted, batch, audit = asgi_requests(
        app,
        [
            ("POST", PREDICT, {**_key(SCORE_KEY), "json": GOOD}),
            ("POST", f"{PREDICT}/batch", {**_key(SCORE_KEY), "json": {"predictions": [GOOD]}}),
            ("GET", AUDIT_ROUTE, _key(SCORE_KEY)),
        ],
    )
    assert predicted.status_code == 200, predicted.text
    assert batch.status_code == 202, batch.text
    _lacks(audit, "audit")


def test_an_audit_only_key_cannot_score(app: Any) -> None:
    """Scopes are independent: an auditor's key reads decisions and scores nothing."""
    job = "0" * 32
    responses = asgi_requests(
        app,
        [
            ("POST", PREDICT, {**_key(AUDIT_KEY), "json": GOOD}),
            ("POST", f"{PREDICT}/batch", {**_key(AUDIT_KEY), "json": {"predictions": [GOOD]}}),
            ("GET", f"{PREDICT}/batch/{job}", _key(AUDIT_KEY)),
            ("GET", f"{PREDICT}/batch/{job}/results.csv", _key(AUDIT_KEY)),
            ("POST", f"{PREDICT}/batch/file", {**_key(AUDIT_KEY), "files": {"file": b"x"}}),
        ],
    )
    for r in responses:
        _lacks(r, "score")
    (audit,) = asgi_requests(app, [("GET", AUDIT_ROUTE, _key(AUDIT_KEY))])
    assert audit.status_code == 200
    assert audit.json()["scopes"] == ["audit"]
    assert audit.json()["key_id"] == hashlib.sha256(AUDIT_KEY.encode()).hexdigest()[:16]


def test_model_info_and_drift_answer_any_valid_key(app: Any) -> None:
    calls = [
        ("GET", f"{API_PREFIX}/{path}", _key(key))
        for key in (SCORE_KEY, AUDIT_KEY, HASHED_KEY)
        for path in ("model/info", "monitoring/drift")
    ]
    assert [r.status_code for r in asgi_requests(app, calls)] == [200] * len(calls)


def test_a_hashed_key_carries_its_scopes(app: Any) -> None:
    predicted, audit = asgi_requests(
        app,
        [
            ("POST", PREDICT, {**_key(HASHED_KEY), "json": GOOD}),
            ("GET", AUDIT_ROUTE, _key(HASHED_KEY)),
        ],
    )
    assert predicted.status_code == 200, predicted.text
    assert audit.status_code == 200, audit.text
    assert audit.json()["scopes"] == ["audit", "score"]


@pytest.mark.parametrize("path", [PREDICT, AUDIT_ROUTE, f"{PREDICT}/batch/{'0' * 32}"])
def test_missing_and_invalid_keys_answer_401_and_403_as_before(app: Any, path: str) -> None:
    method = "POST" if path == PREDICT else "GET"
    missing, invalid, digest = asgi_requests(
        app,
        [
            (method, path, {"json": GOOD}),
            (method, path, {**_key("not-a-key"), "json": GOOD}),
            # the configured digest is not itself a key
            (method, path, {**_key(hashlib.sha256(HASHED_KEY.encode()).hexdigest()), "json": GOOD}),
        ],
    )
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    assert missing.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'
    for r in (invalid, digest):
        assert r.status_code == 403
        assert r.json() == {
            "success": False,
            "error": "forbidden",
            "message": "invalid API key",
            "detail": None,
        }


def test_a_scoped_route_counts_one_request_against_the_limit(
    trained_store: Path, bundle: Any
) -> None:
    """`require_scope` depends on `authorize`, which the router also runs: FastAPI solves it
    once per request, so the key is checked and counted once (3 per minute: 3 pass)."""
    app = _app(trained_store, bundle, rate_limit_per_minute=3)
    responses = asgi_requests(app, [("GET", AUDIT_ROUTE, _key(HASHED_KEY))] * 4)
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    refused = asgi_requests(
        _app(trained_store, bundle, rate_limit_per_minute=3),
        [("GET", AUDIT_ROUTE, _key(SCORE_KEY))] * 4,
    )
    assert [r.status_code for r in refused] == [403, 403, 403, 429]


def test_require_scope_refuses_an_unknown_scope_name() -> None:
    with pytest.raises(ValueError, match="unknown scope 'auditor'"):
        require_scope("auditor")
