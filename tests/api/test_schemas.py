"""Request fields: unknown ones are refused naming them; `reference` is accepted and echoed."""

from __future__ import annotations

from typing import Any

import pytest

from loan_default.api.app import API_PREFIX
from tests.api.conftest import GOOD, JSON_HEADERS, asgi_requests

pytestmark = pytest.mark.integration

PREDICT = f"{API_PREFIX}/predict"
BATCH = f"{API_PREFIX}/predict/batch"


@pytest.fixture(scope="module")
def app(queued_app: Any) -> Any:
    return queued_app


def _post(path: str, body: bytes | dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    return ("POST", path, {**kw, "headers": JSON_HEADERS})


def test_a_misspelt_field_is_refused_naming_it(app: Any) -> None:
    (r,) = asgi_requests(app, [_post(PREDICT, {**GOOD, "referense": "APP-1"})])
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "validation_error"
    assert body["message"] == "invalid request: unknown field 'referense'"
    assert body["detail"] == [
        {
            "type": "extra_forbidden",
            "loc": ["body", "referense"],
            "msg": "unknown field 'referense'",
            "input": "APP-1",
        }
    ]


def test_every_unknown_field_is_named_with_the_other_errors(app: Any) -> None:
    (r,) = asgi_requests(app, [_post(PREDICT, {**GOOD, "employed": 3, "x": 1, "notes": [1]})])
    assert r.status_code == 422
    message = r.json()["message"]
    assert "employed (" in message
    assert "unknown field 'x'" in message
    assert "unknown field 'notes'" in message


@pytest.mark.parametrize("reference", ["APP-2024-000123", "a", "x" * 64, "Loan #7 / branch 12"])
def test_a_reference_is_echoed_back(app: Any, reference: str) -> None:
    with_ref, without, null = asgi_requests(
        app,
        [
            _post(PREDICT, {**GOOD, "reference": reference}),
            _post(PREDICT, GOOD),
            _post(PREDICT, {**GOOD, "reference": None}),
        ],
    )
    assert with_ref.status_code == 200, with_ref.text
    assert with_ref.json()["data"]["reference"] == reference
    # the same answer but for the reference and each decision's own id
    ignore = {"reference", "decision_id"}
    assert {k: v for k, v in with_ref.json()["data"].items() if k not in ignore} == {
        k: v for k, v in without.json()["data"].items() if k not in ignore
    }
    ids = {r.json()["data"]["decision_id"] for r in (with_ref, without, null)}
    assert len(ids) == 3
    assert None not in ids
    assert "reference" not in without.json()["data"]
    assert "reference" not in null.json()["data"]


@pytest.mark.parametrize(
    "reference",
    [
        *("", "x" * 65, " APP-1", "APP-1 ", "APP\n1", "APP-1\n", "APP\t1", "APP\x7f1"),
        *("d\u00e9cision", "\u0410PP-1", 12345),
    ],
)
def test_a_reference_outside_1_to_64_printable_ascii_is_refused(
    app: Any, reference: object
) -> None:
    (r,) = asgi_requests(app, [_post(PREDICT, {**GOOD, "reference": reference})])
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "reference"]
    assert r.json()["message"].startswith("invalid request: reference (")
    if isinstance(reference, str) and 0 < len(reference) <= 64:
        assert r.json()["message"] == (
            "invalid request: reference "
            "(String should be printable ASCII, with no space at either end)"
        )


def test_a_reference_given_twice_is_refused(app: Any) -> None:
    body = b'{"employed": 1, "bank_balance": 1, "annual_salary": 2, "reference": "a", '
    body += b'"reference": "b"}'
    batch = b'{"predictions": [' + body + b"]}"
    single, many = asgi_requests(app, [_post(PREDICT, body), _post(BATCH, batch)])
    assert single.status_code == 422
    assert single.json()["detail"][0]["type"] == "duplicate_key"
    assert single.json()["detail"][0]["loc"] == ["body", "reference"]
    assert many.status_code == 422
    assert many.json()["detail"][0]["loc"] == ["body", "predictions", 0, "reference"]


def test_batch_items_take_a_reference_and_refuse_unknown_fields(app: Any) -> None:
    accepted, item, top = asgi_requests(
        app,
        [
            _post(BATCH, {"predictions": [{**GOOD, "reference": "APP-1"}, GOOD]}),
            _post(BATCH, {"predictions": [GOOD, {**GOOD, "referense": "APP-2"}]}),
            _post(BATCH, {"predictions": [GOOD], "callback": "https://example.com"}),
        ],
    )
    assert accepted.status_code == 202, accepted.text
    assert item.status_code == 422
    assert item.json()["message"] == "invalid request: unknown field 'referense' in predictions.1"
    assert item.json()["detail"][0]["loc"] == ["body", "predictions", 1, "referense"]
    assert top.status_code == 422
    assert top.json()["message"] == "invalid request: unknown field 'callback'"


def test_the_openapi_document_states_the_contract(app: Any) -> None:
    (r,) = asgi_requests(app, [("GET", "/openapi.json", {})])
    paths = r.json()["paths"]
    schema = paths[PREDICT]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["reference"]["anyOf"][0]["maxLength"] == 64
    batch = paths[BATCH]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert batch["additionalProperties"] is False
    assert batch["properties"]["predictions"]["items"]["additionalProperties"] is False
