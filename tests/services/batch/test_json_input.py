"""`json_input.plain_rows`: the fast read of a plainly valid JSON batch body.

The request model stays the authority, so the property that matters is one-sided: whatever
`plain_rows` accepts, the model accepts too, with the same values, bit for bit; whatever the
model refuses, `plain_rows` declines (None), leaving the 422 to the model.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.exceptions import RequestValidationError

from loan_default.api.v1 import batch_body
from loan_default.core.config import Settings
from loan_default.core.errors import InvalidInput
from loan_default.features import MAX_AMOUNT, REFERENCE_MAX_LENGTH
from loan_default.services.batch import json_input

pytestmark = pytest.mark.unit

LIMIT = 1000
SETTINGS = Settings(environment="test")


def _model(body: bytes) -> tuple[Any, Any]:
    return batch_body._model_rows(SETTINGS, body, LIMIT)


def _number(rng: random.Random, low: float, high: float) -> str:
    """A JSON number text in [low, high]: integers, short and long decimals, exponents."""
    value = rng.uniform(low, high)
    kind = rng.randrange(6)
    if kind == 0:
        return str(int(value))
    if kind == 1:
        return f"{value:.2f}"
    if kind == 2:
        return repr(value)  # shortest round-trip repr, up to 17 digits
    if kind == 3:
        return f"{value:.25g}"  # more digits than a double holds: rounding must agree
    if kind == 4:
        return f"{value:.6e}".replace("e+", "E+")
    return rng.choice([str(low), str(high), f"{low:g}", "0.0" if low == 0 else "1"])


def _body(rng: random.Random, n: int) -> bytes:
    items = []
    for _ in range(n):
        fields = [
            f'"employed": {rng.choice(["0", "1"])}',
            f'"bank_balance": {_number(rng, 0, rng.choice([1e4, 1e9, MAX_AMOUNT]))}',
            f'"annual_salary": {_number(rng, 1, rng.choice([1e5, MAX_AMOUNT]))}',
        ]
        ref = rng.randrange(4)
        if ref == 1:
            fields.append('"reference": null')
        elif ref == 2:
            fields.append(f'"reference": "APP-{rng.randrange(10**9)}"')
        rng.shuffle(fields)
        items.append("{" + (", " if rng.random() < 0.5 else ",").join(fields) + "}")
    return ('{"predictions": [' + ",\n ".join(items) + "]}").encode()


@pytest.mark.parametrize("seed", range(40))
def test_what_it_accepts_the_model_accepts_with_the_same_values(seed: int) -> None:
    rng = random.Random(seed)
    body = _body(rng, rng.choice([1, 2, 17, 250, LIMIT]))
    plain = json_input.plain_rows(body, LIMIT)
    assert plain is not None
    raw, references = plain
    model_raw, model_references = _model(body)
    assert raw.dtype == model_raw.dtype == np.float64
    assert raw.shape == model_raw.shape
    assert raw.tobytes() == model_raw.tobytes()  # bit for bit, -0.0 included
    assert references == model_references


def test_edge_values_inside_the_bounds_are_read() -> None:
    body = orjson.dumps(
        {
            "predictions": [
                {"employed": 0, "bank_balance": 0, "annual_salary": 1},
                {"employed": 1, "bank_balance": MAX_AMOUNT, "annual_salary": MAX_AMOUNT},
                {"employed": 1, "bank_balance": -0.0, "annual_salary": 1.0},
                {
                    "employed": 0,
                    "bank_balance": 5,
                    "annual_salary": 7,
                    "reference": "R" * REFERENCE_MAX_LENGTH,
                },
            ]
        }
    )
    plain = json_input.plain_rows(body, LIMIT)
    assert plain is not None
    assert plain[0].tobytes() == _model(body)[0].tobytes()
    assert plain[1] == [None, None, None, "R" * REFERENCE_MAX_LENGTH]


GOOD = '{"employed": 1, "bank_balance": 10.5, "annual_salary": 100}'
REFUSED = {
    "employed true": '{"employed": true, "bank_balance": 1, "annual_salary": 5}',
    "employed 1.0": '{"employed": 1.0, "bank_balance": 1, "annual_salary": 5}',
    "employed 2": '{"employed": 2, "bank_balance": 1, "annual_salary": 5}',
    "employed -1": '{"employed": -1, "bank_balance": 1, "annual_salary": 5}',
    "employed text": '{"employed": "1", "bank_balance": 1, "annual_salary": 5}',
    "balance text": '{"employed": 1, "bank_balance": "5", "annual_salary": 5}',
    "balance null": '{"employed": 1, "bank_balance": null, "annual_salary": 5}',
    "balance false": '{"employed": 1, "bank_balance": false, "annual_salary": 5}',
    "balance negative": '{"employed": 1, "bank_balance": -0.01, "annual_salary": 5}',
    "balance over": '{"employed": 1, "bank_balance": 1000000000001, "annual_salary": 5}',
    "balance list": '{"employed": 1, "bank_balance": [1], "annual_salary": 5}',
    "salary under 1": '{"employed": 1, "bank_balance": 1, "annual_salary": 0.5}',
    "salary huge int": '{"employed": 1, "bank_balance": 1, "annual_salary": 18446744073709551616}',
    "salary infinite": '{"employed": 1, "bank_balance": 1, "annual_salary": 1e400}',
    "salary NaN": '{"employed": 1, "bank_balance": 1, "annual_salary": NaN}',
    "missing salary": '{"employed": 1, "bank_balance": 1}',
    "unknown key": '{"employed": 1, "bank_balance": 1, "annual_salary": 5, "x": 1}',
    "reference empty": '{"employed": 1, "bank_balance": 1, "annual_salary": 5, "reference": ""}',
    "reference padded": '{"employed": 1, "bank_balance": 1, "annual_salary": 5, "reference": " a"}',
    "reference long": '{"employed": 1, "bank_balance": 1, "annual_salary": 5, "reference": "'
    + "a" * (REFERENCE_MAX_LENGTH + 1)
    + '"}',
    "reference not ascii": '{"employed": 1, "bank_balance": 1, "annual_salary": 5, '
    '"reference": "caf\u00e9"}',
    "reference number": '{"employed": 1, "bank_balance": 1, "annual_salary": 5, "reference": 7}',
    "item a list": "[1, 10, 100]",
    "item null": "null",
    "item text": '"x"',
}


@pytest.mark.parametrize("item", REFUSED.values(), ids=REFUSED.keys())
def test_an_item_the_model_refuses_is_declined(item: str) -> None:
    body = ('{"predictions": [' + GOOD + ", " + item + "]}").encode()
    assert json_input.plain_rows(body, LIMIT) is None
    with pytest.raises((RequestValidationError, InvalidInput)):
        _model(body)


BODIES = {
    "not JSON": b'{"predictions": [',
    "not UTF-8": b'{"predictions": [{"employed": 1, "bank_balance": 1, "annual_salary": 5}], '
    b'"x\xff": 1}',
    "a list": b"[" + GOOD.encode() + b"]",
    "no items": b'{"predictions": []}',
    "items not a list": b'{"predictions": ' + GOOD.encode() + b"}",
    "another top-level key": b'{"predictions": [' + GOOD.encode() + b'], "x": 1}',
    "no predictions": b'{"prediction": [' + GOOD.encode() + b"]}",
    "over the limit": b'{"predictions": [' + b", ".join([GOOD.encode()] * (LIMIT + 1)) + b"]}",
}


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_a_body_the_model_refuses_is_declined(body: bytes) -> None:
    assert json_input.plain_rows(body, LIMIT) is None
    with pytest.raises((RequestValidationError, InvalidInput)):
        _model(body)


def test_a_repeated_key_keeps_its_last_value_on_both_paths() -> None:
    """Both parsers keep the last value; the submit then refuses the body either way
    (`duplicate_feature_key`), so this pins only that the two paths agree."""
    item = b'{"employed": 1, "bank_balance": 1, "bank_balance": 2, "annual_salary": 5}'
    body = b'{"predictions": [' + item + b"]}"
    plain = json_input.plain_rows(body, LIMIT)
    assert plain is not None
    assert plain[0].tobytes() == _model(body)[0].tobytes()
    assert plain[0][0, 1] == 2.0
    with pytest.raises(RequestValidationError):
        batch_body.validated_rows(SETTINGS, body)
