"""The JSON batch submit's body, read into the raw feature matrix and the references.

Bounded before it is parsed, read without a model object per item when it is plainly valid,
validated by the request model otherwise (the authority, and the 422's errors in FastAPI's
shape). The route (`batch.submit_batch`) decides only where this runs: on the event loop, or in
the threadpool for a body over INLINE_VALIDATION_BYTES.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from loan_default.api.errors import body_validation_error, duplicate_key_error
from loan_default.api.v1 import batch_docs
from loan_default.core.config import Settings
from loan_default.core.errors import InvalidInput
from loan_default.services.batch import json_input

#: Bodies up to this size are validated on the event loop, larger ones in the threadpool. A
#: full job of BATCH_MAX_ROWS = 1000 items is ~70 kB (~150 kB with 64-character references);
#: its checks and validation take ~1 ms, which the loop can spare, and run where the body was
#: just read: in a worker thread the submit measured 4.9 against 4.6 ms, median of 4 alternating
#: rounds of bench/bench_batch_latency.py. What the loop may ever be held for is bounded by this
#: size and by BATCH_MAX_ROWS: more values than its items may hold are refused before pydantic
#: runs, and pydantic stops at BATCH_MAX_ROWS items (`validated_rows`). A body the fast read
#: declines is parsed twice (orjson, then pydantic): a refused body costs one more parse.
INLINE_VALIDATION_BYTES: Final = 256 * 1024


def validated_rows(
    settings: Settings, body: bytes
) -> tuple[npt.NDArray[np.float64], list[str | None] | None]:
    """Count, validate, check for repeated keys: each step bounded by the one before. Returns
    the raw feature matrix and the items' references (None when no item gave one).

    The item and value counts are bounded before anything is parsed: validating 660,000 empty
    items took 22 s and 278 MB of errors, and even a C parser holds the event loop 50-150 ms on
    such a body. Byte counts prove the bounds for an ordinary body (`within_bounds`); any other
    is scanned (`json_shape`, no Python objects, GIL released) and refused if over them.
    Then a plainly valid body is read without a model object per item (`json_input.plain_rows`);
    any other is validated by pydantic straight from bytes (half the cost of FastAPI's body
    parameter for 1000 items), whose errors keep FastAPI's shape, `loc` =
    body.predictions.<i>.<field>, capped at BATCH_MAX_REPORTED_ERRORS.
    """
    limit = settings.batch_max_rows
    if not json_input.within_bounds(body, limit):
        _check_shape(body, limit)
    rows = json_input.plain_rows(body, limit) or _model_rows(settings, body, limit)
    repeated = json_input.duplicate_feature_key(body, rows[0].shape[0])
    if repeated is not None:
        raise duplicate_key_error("predictions", *repeated)
    return rows


def _model_rows(
    settings: Settings, body: bytes, limit: int
) -> tuple[npt.NDArray[np.float64], list[str | None] | None]:
    """The request model's validation (from bytes): the authority on what a body may hold, and
    the 422's errors, in FastAPI's shape."""
    try:
        payload = batch_docs.bounded_request(limit).model_validate_json(body)
    except ValidationError as exc:
        for e in exc.errors(include_url=False, include_input=False):
            if e["type"] == "too_long" and e["loc"] == ("predictions",):
                _check_shape(body, limit)  # the 422 with the exact item count
                raise _too_many_items(limit, e.get("ctx", {}).get("actual_length")) from None
        raise body_validation_error(exc, settings.batch_max_reported_errors) from None
    rows = payload.predictions
    # column lists, not a tuple per row: numpy converts three flat lists of numbers faster
    columns = [
        [p.employed for p in rows],
        [p.bank_balance for p in rows],
        [p.annual_salary for p in rows],
    ]
    raw = np.array(columns, dtype=np.float64).T
    references = [p.reference for p in rows]
    return raw, references if any(r is not None for r in references) else None


def _too_many_items(limit: int, got: int | None) -> InvalidInput:
    return InvalidInput(
        f"at most {limit} predictions per job (got {got if got is not None else 'more'}); "
        "upload larger portfolios to /api/v1/predict/batch/file",
        detail=[
            {
                "type": "too_long",
                "loc": ["body", "predictions"],
                "msg": f"List should have at most {limit} items",
            }
        ],
    )


def _check_shape(body: bytes, limit: int) -> None:
    """The exact item and value counts of `json_shape`; 422 when either is over the bound."""
    shape = json_input.json_shape(body)
    if shape.items is not None and shape.items > limit:
        raise _too_many_items(limit, shape.items)
    if shape.values > json_input.max_json_values(limit):
        raise InvalidInput(
            f"the body holds more JSON values than {limit} predictions can "
            f"({json_input.MAX_JSON_VALUES_PER_ITEM} per item)",
            detail=[
                {
                    "type": "too_long",
                    "loc": ["body"],
                    "msg": f"at most {json_input.max_json_values(limit)} values",
                }
            ],
        )
