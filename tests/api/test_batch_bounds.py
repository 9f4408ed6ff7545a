"""The submit's item and value bounds: proven by byte counts, or by the scan, with one answer."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from loan_default.api.app import API_PREFIX
from loan_default.services.batch import json_input
from tests.api.conftest import JSON_HEADERS, asgi_requests

BATCH = f"{API_PREFIX}/predict/batch"
ITEM = orjson.dumps({"employed": 1, "bank_balance": 5.0, "annual_salary": 100.0})


def _body(*items: bytes) -> bytes:
    return b'{"predictions":[' + b",".join(items) + b"]}"


@pytest.mark.unit
def test_byte_counts_prove_an_ordinary_body_and_nothing_over_the_bounds() -> None:
    assert json_input.within_bounds(_body(*[ITEM] * 1000), 1000)
    assert not json_input.within_bounds(_body(*[b"{}"] * 1001), 1000)  # objects
    assert not json_input.within_bounds(_body(ITEM, b"[" + b"0," * 40_000 + b"0]"), 1000)  # values
    # a reference holding commas is counted as if they were values: the scan decides
    with_commas = orjson.dumps({**orjson.loads(ITEM), "reference": "," * 40})
    assert not json_input.within_bounds(_body(*[with_commas] * 1000), 1000)


@pytest.fixture(scope="module")
def app(queued_app: Any) -> Any:
    return queued_app


@pytest.mark.integration
@pytest.mark.parametrize(
    ("items", "got"),
    [
        ([ITEM] * 1000 + [b"1"], 1001),  # within the byte counts: the model's max_length
        ([b"1"] * 20_000, 20_000),  # scalars: within the byte counts too
        ([ITEM] * 1001, 1001),  # objects over the byte-count bound: refused by the scan
        ([b"{}"] * 5000, 5000),
    ],
)
def test_too_many_items_get_one_422_with_their_count(
    app: Any, items: list[bytes], got: int
) -> None:
    started = time.perf_counter()
    (r,) = asgi_requests(
        app, [("POST", BATCH, {"content": _body(*items), "headers": JSON_HEADERS})]
    )
    assert r.status_code == 422
    body = r.json()
    assert f"at most 1000 predictions per job (got {got})" in body["message"]
    assert body["detail"] == [
        {
            "type": "too_long",
            "loc": ["body", "predictions"],
            "msg": "List should have at most 1000 items",
        }
    ]
    assert len(r.content) < 2_000  # nothing of the input is echoed
    assert time.perf_counter() - started < 5


@pytest.mark.integration
def test_references_with_commas_are_still_accepted(app: Any) -> None:
    item = orjson.dumps({**orjson.loads(ITEM), "reference": "A,B,{C}"})
    (r,) = asgi_requests(
        app, [("POST", BATCH, {"content": _body(*[item] * 3), "headers": JSON_HEADERS})]
    )
    assert r.status_code == 202, r.text
