"""Issue 11, HTTP half, in process: duplicate keys, capped 422 bodies, readyz reason codes,
the rate limiter's fallback. (The socket-level limits are in tests/hardening/test_http_limits.py.)
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import pytest
from fastapi import Body
from fastapi.testclient import TestClient

from loan_default.api.app import create_app
from loan_default.api.ratelimit import RateLimiter
from loan_default.core.config import Settings
from loan_default.model.bundle import ModelLoadError
from loan_default.services import metrics
from loan_default.services.model import ModelService
from tests.api.conftest import GOOD, JSON_HEADERS

pytestmark = pytest.mark.integration


async def _call(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kw)


@pytest.fixture(scope="module")
def app(trained_settings: Settings, bundle: Any) -> Any:
    settings = trained_settings.model_copy(update={"max_error_detail_bytes": 4096})
    application = create_app(settings, model_service=ModelService(settings=settings, bundle=bundle))

    @application.post("/many")
    async def many(items: list[int] = Body()) -> None:  # noqa: B008 - FastAPI's idiom
        """A body that can fail thousands of checks at once, to exercise the 422 cap."""

    return application


def _predict(app: Any, body: bytes) -> httpx.Response:
    return asyncio.run(_call(app, "POST", "/api/v1/predict", content=body, headers=JSON_HEADERS))


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (
            b'{"employed": 1, "bank_balance": 1.0, "annual_salary": 100.0, "employed": 0}',
            "employed",
        ),
        (b'{"bank_balance": 1, "employed": 1, "bank_balance": 9e9, "annual_salary": 100}', None),
        # an escaped spelling of the same key is the same key
        (b'{"employed": 1, "bank_balance": 1, "annual_salary": 100, "employ\\u0065d": 0}', None),
    ],
)
def test_duplicate_keys_are_refused_naming_the_key(app: Any, body: bytes, key: str | None) -> None:
    r = _predict(app, body)
    assert r.status_code == 422, r.text
    err = r.json()
    name = key or err["detail"][0]["loc"][1]
    assert err["detail"][0]["type"] == "duplicate_key"
    assert err["detail"][0]["loc"] == ["body", name]
    assert name in err["message"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        # the same token elsewhere is not a duplicate key: a string value (escaped or not), a
        # nested object (refused, but as the unknown field it is: issue 13)
        (b'{"employed": 1, "bank_balance": 1, "annual_salary": 100, "reference": "employed"}', 200),
        (
            b'{"employed": 1, "bank_balance": 1, "annual_salary": 100, '
            b'"reference": "say \\"employed\\""}',
            200,
        ),
        (b'{"employed": 1, "bank_balance": 1, "annual_salary": 100, "x": {"employed": 0}}', 422),
    ],
)
def test_no_false_duplicates(app: Any, body: bytes, status: int) -> None:
    r = _predict(app, body)
    assert r.status_code == status, r.text
    if status == 422:
        assert [e["type"] for e in r.json()["detail"]] == ["extra_forbidden"]


def test_validation_error_body_is_capped(app: Any) -> None:
    """50,000 failing items: the answer stays under MAX_ERROR_DETAIL_BYTES (plus the envelope)
    and says how many errors were left out; the message names the first fields only."""
    body = b"[" + b",".join([b'"x"'] * 50_000) + b"]"
    r = asyncio.run(
        _call(app, "POST", "/many", content=body, headers={"Content-Type": "application/json"})
    )
    assert r.status_code == 422
    assert len(r.content) < 4096 + 2048
    err = r.json()
    last = err["detail"][-1]
    assert last["type"] == "detail_truncated"
    assert last["omitted_errors"] == 50_000 - (len(err["detail"]) - 1)
    assert err["message"].endswith(f"and {50_000 - 10} more")


def test_readyz_gives_a_reason_code_not_exception_text(trained_settings: Settings) -> None:
    def refuse(version: str) -> Any:
        raise ModelLoadError(f"/srv/secret/path/model-{version}.onnx: checksum mismatch")

    service = ModelService(
        settings=trained_settings, resolve_alias=lambda: "7", load_version=refuse
    )
    service.check_for_update()
    application = create_app(trained_settings.model_copy(), model_service=service)
    r = asyncio.run(_call(application, "GET", "/readyz"))
    assert r.status_code == 503
    assert r.json()["data"]["reason"] == "model_version_refused"
    assert "/srv" not in r.text
    assert "checksum" not in r.text


def _slow_service(settings: Settings, bundle: Any, delay_s: float) -> ModelService:
    def load(version: str) -> Any:
        time.sleep(delay_s)
        return bundle

    return ModelService(settings=settings, resolve_alias=lambda: "1", load_version=load)


def test_a_worker_accepts_requests_only_once_its_model_loaded(
    trained_settings: Settings, bundle: Any
) -> None:
    """Found by the Kubernetes container test: with two uvicorn workers a pod turned ready when
    one worker had loaded, and a predict routed to the other got 503 `model_not_ready`."""
    settings = trained_settings.model_copy(update={"decision_recording": "off"})
    service = _slow_service(settings, bundle, delay_s=1.0)
    with TestClient(create_app(settings, model_service=service)) as client:
        # the lifespan has finished, so a server would accept connections now: the model is in
        assert service.ready
        assert client.get("/readyz").status_code == 200
        r = client.post("/api/v1/predict", json=GOOD, headers=JSON_HEADERS)
        assert r.status_code == 200, r.text
        service.stop()


def test_the_startup_wait_is_bounded(trained_settings: Settings, bundle: Any) -> None:
    settings = trained_settings.model_copy(
        update={"decision_recording": "off", "model_startup_wait_s": 0.2}
    )
    service = _slow_service(settings, bundle, delay_s=3.0)
    t0 = time.monotonic()
    with TestClient(create_app(settings, model_service=service)) as client:
        assert time.monotonic() - t0 < 2.5
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["data"]["model_loaded"] is False
        service.stop()


# --- the limiter alone ----------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_limiter_falls_back_to_memory_when_redis_is_down() -> None:
    async def run() -> None:
        limiter = RateLimiter(
            per_minute=3,
            storage_uri=f"redis://127.0.0.1:{_closed_port()}/0",
            key_prefix="t",
            storage_timeout_s=0.2,
        )
        decisions = [await limiter.hit("ip:1.2.3.4") for _ in range(5)]
        assert [d.allowed for d in decisions] == [True, True, True, False, False]
        assert limiter.degraded
        assert limiter.status() == {"storage": "redis", "status": "degraded"}
        assert metrics.RATE_LIMIT_DEGRADED._value.get() == 1
        await limiter.close()

    asyncio.run(run())


@pytest.mark.parametrize("value", ["", "1", "yes", " true", "TRUE", "0"])
def test_explain_is_exactly_true_or_false(app: Any, value: str) -> None:
    """Found by the schema fuzz: `?explain=` was read as false (200) though the document says
    boolean; now only `true` and `false` are accepted, anything else is a 422 naming `explain`."""
    body = b'{"employed": 1, "bank_balance": 1.0, "annual_salary": 100.0}'
    r = asyncio.run(
        _call(
            app,
            "POST",
            "/api/v1/predict",
            params={"explain": value},
            content=body,
            headers=JSON_HEADERS,
        )
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["query", "explain"]
