"""In-process app (httpx ASGI transport) with the real model: internal errors, fuzzed bodies."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loan_default.api.app import create_app
from loan_default.core.config import Settings
from loan_default.services.model import ModelService
from tests.api.conftest import JSON_HEADERS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(trained_settings: Settings, bundle: Any) -> Any:
    service = ModelService(settings=trained_settings, bundle=bundle)
    application = create_app(trained_settings.model_copy(), model_service=service)

    @application.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret /etc/passwd details")

    return application


async def _call(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kw)


def test_unexpected_error_is_generic_500_with_request_id(app: Any) -> None:
    r = asyncio.run(_call(app, "GET", "/boom", headers={"X-Request-ID": "req-42"}))
    assert r.status_code == 500
    body = r.json()
    assert body == {
        "success": False,
        "error": "internal_error",
        "message": body["message"],
        "detail": {"request_id": "req-42"},
    }
    assert "secret" not in r.text
    assert "RuntimeError" not in r.text
    assert r.headers["x-request-id"] == "req-42"


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "employed": _json_values,
            "bank_balance": _json_values,
            "annual_salary": _json_values,
        },
    )
)
def test_any_json_body_is_200_or_422(app: Any, body: dict[str, Any]) -> None:
    raw = json.dumps(body, allow_nan=True)
    r = asyncio.run(_call(app, "POST", "/api/v1/predict", content=raw, headers=JSON_HEADERS))
    assert r.status_code in (200, 422), r.text
    assert r.json()["success"] is (r.status_code == 200)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_predict_answers_other_methods_405_naming_post(app: Any, method: str) -> None:
    """Predict is served by a plain Starlette route ahead of the APIRoute that documents it
    (api/v1/predict.py): other methods still get the envelope's 405 with `Allow: POST`."""
    r = asyncio.run(_call(app, method, "/api/v1/predict", headers=JSON_HEADERS))
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json()["error"] == "method_not_allowed"


def test_predict_is_documented_once_and_labelled_by_its_route(app: Any) -> None:
    async def run() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                good = {"employed": 1, "bank_balance": 1000.0, "annual_salary": 50000.0}
                predicted = await client.post("/api/v1/predict", json=good, headers=JSON_HEADERS)
                return predicted, await client.get("/openapi.json"), await client.get("/metrics")

    predicted, spec, metrics = asyncio.run(run())
    assert predicted.status_code == 200
    assert list(spec.json()["paths"]["/api/v1/predict"]) == ["post"]
    assert 'handler="/api/v1/predict"' in metrics.text
