"""Outcome feedback (`/api/v1/outcomes...`): whether decided applicants defaulted, as JSON or CSV.

Parse, call `DecisionStore.record_outcomes`, answer the counts. Who may: a key with the
`outcomes` scope (the system that feeds outcomes, which need not read decisions) or `audit`;
anyone else gets 403 naming `outcomes`. An upload is recorded all or nothing: an item that
contradicts a recorded outcome (or another item) is a 409 naming the decisions and nothing is
written; an invalid item is a 422 naming its index (JSON) or row (CSV) and the field; an item
naming no recorded decision is counted and listed back (`unknown`), never dropped silently.

The JSON body is parsed by the handler, as the batch route's is: its item count is read off a
byte scan before pydantic builds anything (OUTCOMES_MAX_ITEMS), and a key repeated inside one
item is refused. Uploads run in the threadpool (a million rows takes seconds).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from loan_default.api.deps import Principal, authorize, check_scope, require_json
from loan_default.api.errors import body_validation_error, duplicate_key_error
from loan_default.api.schemas import Envelope, ErrorEnvelope, JSONBytes
from loan_default.api.v1.decisions import decision_store
from loan_default.core.clock import parse_utc
from loan_default.core.config import Settings
from loan_default.core.errors import InvalidInput
from loan_default.core.json_keys import RepeatedKeys
from loan_default.core.keys import AUDIT, OUTCOMES
from loan_default.features import REFERENCE_MAX_LENGTH, REFERENCE_PATTERN, REFERENCE_RE
from loan_default.services.batch import PayloadTooLarge, json_input
from loan_default.services.decisions import outcome_input
from loan_default.services.decisions.ids import valid_decision_id
from loan_default.services.decisions.outcomes import Outcome, OutcomeColumns, OutcomeResult
from loan_default.services.decisions.store import DecisionStore

router = APIRouter(prefix="/outcomes", tags=["outcomes"])

#: Request-body limits of this router's routes beyond MAX_BODY_BYTES (see batch.BODY_LIMITS).
BODY_LIMITS: dict[str, str] = {"/file": "max_upload_bytes"}
_ITEM_KEYS: Final = RepeatedKeys(outcome_input.COLUMNS)
#: Values one item may hold (its four fields and their separators), with slack so an item with
#: a few unknown fields gets the 422 naming them rather than this count.
_VALUES_PER_ITEM: Final = 16


def body_limits(settings: Settings, *, prefix: str) -> dict[str, int]:
    return {
        f"{prefix}{router.prefix}{path}": getattr(settings, n) for path, n in BODY_LIMITS.items()
    }


async def uploader(principal: Annotated[Principal, Depends(authorize)]) -> Principal:
    """The caller, if its key holds `outcomes` or `audit`; else 403 naming `outcomes`."""
    if AUDIT not in principal.scopes:
        check_scope(principal, OUTCOMES)
    return principal


Uploader = Annotated[Principal, Depends(uploader)]


def _observed_at(value: Any) -> datetime:
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_type", "Input should be an ISO 8601 string")
    try:
        return parse_utc(value)
    except ValueError:
        raise PydanticCustomError("datetime_from_iso", outcome_input.TIME_REASON) from None


class OutcomeItem(BaseModel):
    """One outcome: the decision (by `decision_id` or your `reference`), and what became of it."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    decision_id: str | None = Field(
        default=None,
        description="The decision's id (as answered by predict or batch). Exactly one of "
        "decision_id and reference.",
        examples=["01a21cec-5a3e-7b1c-8d2e-3f4a5b6c7d8e"],
        json_schema_extra={"pattern": outcome_input.ID_PATTERN},
    )
    reference: str | None = Field(
        default=None,
        min_length=1,
        max_length=REFERENCE_MAX_LENGTH,
        description="Your reference of the application; names its latest decision.",
        json_schema_extra={"pattern": REFERENCE_PATTERN},
    )
    defaulted: bool = Field(description="Whether the applicant defaulted.")
    observed_at: Annotated[datetime, BeforeValidator(_observed_at)] = Field(
        description="When the outcome was observed: ISO 8601, UTC when no offset is given."
    )

    @field_validator("decision_id")
    @classmethod
    def _decision_id(cls, value: str | None) -> str | None:
        if value is not None and not valid_decision_id(value.lower()):
            raise PydanticCustomError("decision_id", outcome_input.ID_REASON)
        return None if value is None else value.lower()

    @field_validator("reference")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not REFERENCE_RE.fullmatch(value):
            raise PydanticCustomError("string_pattern_mismatch", outcome_input.REFERENCE_REASON)
        return value

    @model_validator(mode="after")
    def _one_of(self) -> OutcomeItem:
        if (self.decision_id is None) == (self.reference is None):
            raise PydanticCustomError("decision_id_or_reference", outcome_input.ONE_OF_REASON)
        return self


class OutcomesRequest(BaseModel):
    """The body of `POST /api/v1/outcomes`: 1 to OUTCOMES_MAX_ITEMS outcomes."""

    model_config = ConfigDict(extra="forbid")

    outcomes: list[OutcomeItem] = Field(min_length=1)


class OutcomesRecorded(BaseModel):
    received: int = Field(description="Items in the request.")
    inserted: int = Field(description="Outcomes recorded now.")
    unchanged: int = Field(
        description="Items already recorded with the same outcome (re-sent): nothing changed."
    )
    unknown: int = Field(description="Items naming no recorded decision (nothing recorded).")
    unknown_items: list[str] = Field(
        description="The first 20 unknown items' decision_id or reference, as sent."
    )


RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorEnvelope,
        "description": "`outcome_conflict`: an item contradicts the outcome recorded for its "
        "decision, or another item of the request; `detail.decision_ids` names the first "
        "decisions; nothing of the request was recorded",
    },
    413: {"model": ErrorEnvelope, "description": "the body is larger than its limit"},
    415: {"model": ErrorEnvelope, "description": "not JSON (the JSON route)"},
    422: {"model": ErrorEnvelope, "description": "an invalid item (field and index named)"},
    503: {"model": ErrorEnvelope, "description": "the decision record is unavailable"},
}


def _answer(result: OutcomeResult) -> Response:
    data = OutcomesRecorded(**result.as_dict()).model_dump()
    message = (
        f"{result.inserted} outcome(s) recorded, {result.unchanged} unchanged, "
        f"{result.unknown} unknown"
    )
    return JSONBytes({"success": True, "data": data, "message": message})


def _parse_items(body: bytes, settings: Settings) -> OutcomeColumns:
    """Count, validate, check for repeated keys (each step bounded by the one before)."""
    limit = settings.outcomes_max_items
    shape = json_input.json_shape(body, key="outcomes")
    too_long = (shape.items is not None and shape.items > limit) or (
        shape.values > _VALUES_PER_ITEM * limit + 64
    )
    if too_long:
        raise InvalidInput(
            f"at most {limit} outcomes per request; upload more to /api/v1/outcomes/file",
            detail=[
                {
                    "type": "too_long",
                    "loc": ["body", "outcomes"],
                    "msg": f"List should have at most {limit} items",
                }
            ],
        )
    try:
        payload = OutcomesRequest.model_validate_json(body)
    except ValidationError as exc:
        raise body_validation_error(exc, settings.batch_max_reported_errors) from None
    items = payload.outcomes
    try:
        repeated = _ITEM_KEYS.find(
            body, objects=len(items), pick=lambda doc: doc.get("outcomes", [])
        )
    except (ValueError, RecursionError):
        raise InvalidInput("the body is nested too deeply") from None
    if repeated is not None:
        raise duplicate_key_error("outcomes", *repeated)
    return OutcomeColumns.from_items(
        [
            Outcome(
                defaulted=i.defaulted,
                observed_at=i.observed_at,
                decision_id=i.decision_id,
                reference=i.reference,
            )
            for i in items
        ]
    )


def _record_json(store: DecisionStore, body: bytes, settings: Settings, key_id: str) -> Response:
    return _answer(store.record_outcomes(_parse_items(body, settings), key_id=key_id))


#: The handler parses the body itself, so its schema is given to OpenAPI here, inlined (pydantic's
#: `$defs` refs would not resolve from the document root; see batch_docs.SUBMIT_OPENAPI).
JSON_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "title": "OutcomesRequest",
                    "type": "object",
                    "required": ["outcomes"],
                    "additionalProperties": False,
                    "properties": {
                        "outcomes": {
                            "type": "array",
                            "minItems": 1,
                            "description": "1 to OUTCOMES_MAX_ITEMS outcomes.",
                            "items": OutcomeItem.model_json_schema(),
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    dependencies=[Depends(require_json)],
    response_model=Envelope[OutcomesRecorded],
    openapi_extra=JSON_OPENAPI,
    responses=RESPONSES,
    summary="Record outcomes (defaulted or not) of past decisions, by decision id or reference",
)
async def record_outcomes(request: Request, principal: Uploader) -> Response:
    store = decision_store(request)
    body = await request.body()
    return await run_in_threadpool(
        _record_json, store, body, request.app.state.settings, principal.key_id
    )


def _record_file(
    store: DecisionStore, upload: UploadFile, settings: Settings, key_id: str
) -> Response:
    fh = upload.file
    fh.seek(0, 2)
    size = fh.tell()
    fh.seek(0)
    if size > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"the file is larger than {settings.max_upload_bytes} bytes",
            detail={"max_upload_bytes": settings.max_upload_bytes},
        )
    if size == 0:
        raise InvalidInput("the uploaded file is empty")
    columns = outcome_input.parse_outcomes_csv(
        fh,
        max_rows=settings.outcomes_file_max_rows,
        max_columns=settings.batch_csv_max_columns,
        max_header_bytes=settings.batch_csv_max_header_bytes,
        max_errors=settings.batch_max_reported_errors,
    )
    return _answer(store.record_outcomes(columns, key_id=key_id))


FILE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "title": "OutcomesFileUpload",
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV with columns `decision_id` or `reference` (one "
                            "per row), `defaulted` (0, 1, true, false) and `observed_at` (ISO "
                            "8601, UTC without an offset); up to OUTCOMES_FILE_MAX_ROWS rows.",
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "/file",
    response_model=Envelope[OutcomesRecorded],
    openapi_extra=FILE_OPENAPI,
    responses={
        **RESPONSES,
        400: {"model": ErrorEnvelope, "description": "malformed multipart body"},
    },
    summary="Record a CSV of outcomes (up to OUTCOMES_FILE_MAX_ROWS rows), all or nothing",
)
async def record_outcomes_file(request: Request, principal: Uploader) -> Response:
    # the form is read after the key is checked (the dependency): see batch_docs.FILE_OPENAPI
    store = decision_store(request)
    form = await request.form(max_files=1, max_fields=16)
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise RequestValidationError(
                [
                    {
                        "type": "missing",
                        "loc": ("body", "file"),
                        "msg": "Field required: a file part named `file`",
                        "input": None,
                    }
                ]
            )
        return await run_in_threadpool(
            _record_file, store, file, request.app.state.settings, principal.key_id
        )
    finally:
        await form.close()
