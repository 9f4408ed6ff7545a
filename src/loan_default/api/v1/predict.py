"""Single-applicant scoring: the hot path.

Measured choices (bench/bench_api.py): the body is validated straight from bytes by pydantic's
JSON parser (`model_validate_json`) instead of FastAPI's body parameter, and the service and drift
monitor are read from `app.state` rather than through three more dependencies: FastAPI's
dependency and body machinery cost ~130 us per request here, several times the model call. The
OpenAPI document still shows the request schema. Errors keep FastAPI's 422 shape. The handler
reads the current bundle once (inside `predict_one`), so a model swap mid-request cannot mix
versions; the answer is pre-serialized orjson bytes.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response

from loan_default.api.deps import authorize, require_json
from loan_default.api.schemas import (
    Envelope,
    ErrorEnvelope,
    JSONBytes,
    PredictionData,
    PredictionRequest,
)
from loan_default.core.errors import ModelNotReady
from loan_default.services import metrics
from loan_default.services.drift import DriftMonitor
from loan_default.services.model import ModelService

_recorder = metrics.PredictionRecorder()
#: `explain` is documented as an OpenAPI boolean, i.e. `true` or `false` in a query. Anything
#: else (`1`, `yes`, an empty value, padded spellings) is refused: the schema-driven fuzz sent
#: `?explain=` and was answered 200, a schema-violating request accepted.
_BOOLEAN = {"true": True, "false": False}

_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictionRequest.model_json_schema()}},
    },
    "parameters": [
        {
            "name": "explain",
            "in": "query",
            "required": False,
            "schema": {"type": "boolean", "default": False},
            "description": "Add XGBoost per-feature contributions (log-odds, sum = raw margin).",
        }
    ],
}


#: The fields as they appear in JSON: a body naming one twice is refused (see `_duplicate_field`).
_FIELD_TOKENS: Final = tuple(
    (name, f'"{name}"'.encode()) for name in PredictionRequest.model_fields
)


def _duplicate_field(body: bytes) -> str | None:
    """The first field the top-level object names twice, else None.

    JSON parsers, pydantic's included, keep the last of duplicate keys silently, so
    `{"employed": 1, ..., "employed": 0}` scored as unemployed while a proxy or an audit log
    reading the first key saw employed. Fast path (~0.3 us): with no backslash in the body no key
    can be escaped, so each field's quoted name occurring at most once proves there is no
    duplicate. Otherwise (rare) the body is parsed with a pairs hook to be exact.
    """
    if b"\\" not in body:
        for _, token in _FIELD_TOKENS:
            if body.count(token) > 1:
                break
        else:
            return None
    top: list[list[tuple[str, Any]]] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        top.append(pairs)  # inner objects are hooked first: the last call is the top level
        return {}

    try:
        parsed = json.loads(body, object_pairs_hook=hook)
    except (ValueError, RecursionError):
        return None  # not valid JSON: pydantic names the error
    if not isinstance(parsed, dict):
        return None  # not an object: pydantic names the error
    seen: set[str] = set()
    for key, _ in top[-1]:
        if key in seen and key in PredictionRequest.model_fields:
            return key
        seen.add(key)
    return None


def parse_body(body: bytes) -> PredictionRequest:
    """Validate a JSON body; errors are re-raised in FastAPI's shape (`loc` starts with body)."""
    duplicate = _duplicate_field(body)
    if duplicate is not None:
        raise RequestValidationError(
            [
                {
                    "type": "duplicate_key",
                    "loc": ("body", duplicate),
                    "msg": f"Field {duplicate!r} appears more than once in the JSON object",
                    "input": None,
                }
            ]
        )
    try:
        return PredictionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def _explain_flag(request: Request) -> bool:
    raw = request.query_params.get("explain")
    if raw is None:
        return False
    value = _BOOLEAN.get(raw)
    if value is not None:
        return value
    raise RequestValidationError(
        [
            {
                "type": "bool_parsing",
                "loc": ("query", "explain"),
                "msg": "Input should be `true` or `false`",
                "input": raw,
            }
        ]
    )


async def predict(request: Request) -> Response:
    await authorize(request)
    await require_json(request)
    explain = _explain_flag(request)
    payload = parse_body(await request.body())
    state = request.app.state
    service: ModelService = state.model_service
    start = time.perf_counter()
    try:
        result = service.predict_one(
            employed=payload.employed,
            bank_balance=payload.bank_balance,
            annual_salary=payload.annual_salary,
            explain=explain,
        )
    except ModelNotReady:
        _recorder.error.inc()
        raise
    _recorder.observe(
        model_version=result.model_version,
        prediction=result.prediction,
        seconds=time.perf_counter() - start,
    )
    features = result.features_used
    drift: DriftMonitor = state.drift
    drift.observe(
        features["employed"],
        features["bank_balance"],
        features["annual_salary"],
        features["saving_rate"],
    )
    request.state.model_version = result.model_version
    return JSONBytes(
        {
            "success": True,
            "data": result.as_dict(),
            "message": f"{result.default_risk} default risk",
        }
    )


def register(app: FastAPI, *, prefix: str, responses: dict[int | str, dict[str, Any]]) -> None:
    """Add the route to the app itself, ahead of every other route.

    Not an included router: FastAPI (0.16x) keeps included routers nested and matches a request
    through each of them in turn (then again to dispatch it); a plain route on the app, tried
    first, measured ~15 us a request less (bench/bench_api.py).
    """
    app.add_api_route(
        f"{prefix}/predict",
        predict,
        methods=["POST"],
        tags=["predict"],
        response_model=Envelope[PredictionData],
        openapi_extra=_OPENAPI,
        responses={
            **responses,
            413: {"model": ErrorEnvelope},
            415: {"model": ErrorEnvelope},
            422: {"model": ErrorEnvelope},
            503: {"model": ErrorEnvelope},
        },
        summary="Probability of default for one applicant",
    )
    routes = app.router.routes
    routes.insert(0, routes.pop())
