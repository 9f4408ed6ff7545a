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

import time
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from loan_default.api.deps import authorize, check_scope, require_json
from loan_default.api.schemas import (
    Envelope,
    ErrorEnvelope,
    JSONBytes,
    PredictionData,
    PredictionRequest,
)
from loan_default.core.errors import ModelNotReady
from loan_default.core.json_keys import RepeatedKeys
from loan_default.core.keys import SCORE
from loan_default.services import metrics
from loan_default.services.decisions.errors import DecisionStoreUnavailable
from loan_default.services.decisions.recorder import DecisionRecorder
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


#: A body naming a field twice is refused (JSON parsers would keep the last value silently).
_REPEATS: Final = RepeatedKeys(PredictionRequest.model_fields)


def _top_level(doc: Any) -> list[Any]:
    return [doc] if isinstance(doc, dict) else []


def _duplicate_field(body: bytes) -> str | None:
    """The first field the top-level object names twice, else None (invalid JSON is left for
    pydantic to name)."""
    try:
        found = _REPEATS.find(body, objects=1, pick=_top_level)
    except (ValueError, RecursionError):
        return None
    return None if found is None else found[1]


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
    principal = await authorize(request)
    check_scope(principal, SCORE)
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
    seconds = time.perf_counter() - start
    decisions: DecisionRecorder = state.decisions
    try:
        decision_id = await decisions.record_prediction(
            result,
            key_id=principal.key_id,
            request_id=request.state.request_id,
            reference=payload.reference,
        )
    except DecisionStoreUnavailable:
        _recorder.error.inc()
        raise
    _recorder.observe(
        model_version=result.model_version, prediction=result.prediction, seconds=seconds
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
    data = {"decision_id": decision_id, **result.as_dict()}
    if payload.reference is not None:
        data["reference"] = payload.reference
    return JSONBytes(
        {"success": True, "data": data, "message": f"{result.default_risk} default risk"}
    )


class _ServedRoute(Route):
    """A Starlette route that records itself as `scope["route"]`, as FastAPI's routes do: the
    middleware labels metrics and the access line with the matched route's template."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def register(app: FastAPI, *, prefix: str, responses: dict[int | str, dict[str, Any]]) -> None:
    """Serve the route with a plain Starlette `Route`, tried first; document it with an APIRoute.

    Why two: FastAPI's APIRoute wraps every call in its request machinery (two AsyncExitStacks,
    the endpoint context, the dependency solver, closures built per request) even for an
    endpoint that takes only the `Request`: 13 % of the instructions the server executed for a
    predict (bench/bench_instructions.py, DESIGN.md). The handler already does everything
    that machinery would (auth, JSON check, validation in FastAPI's 422 shape), so Starlette's
    `request_response` wrapper is enough. The APIRoute stays behind it in the table, where it
    is never matched for a POST but gives the OpenAPI document its request, response and error
    schemas. Not an included router either: FastAPI (0.16x) keeps included routers nested and
    matches a request through each of them in turn.
    """
    path = f"{prefix}/predict"
    app.add_api_route(
        path,
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
    documented = routes.pop()
    routes[0:0] = [
        _ServedRoute(path, predict, methods=["POST"], include_in_schema=False),
        documented,
    ]
