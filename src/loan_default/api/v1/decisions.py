"""Reading the decision record back: one decision by id, or a filtered, cursor-paged list.

Who sees what: a key with the `audit` scope reads every decision; a `score` key reads only the
decisions it made, and another key's decision answers exactly as an unknown id does (404), so
ids cannot be probed for existence. A key with neither scope gets 403 naming `audit`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from loan_default.api.deps import Principal, authorize, check_scope
from loan_default.api.schemas import Envelope, ErrorEnvelope, IsoTime, JSONBytes
from loan_default.core.config import Settings
from loan_default.core.errors import NotFound, ServiceUnavailable
from loan_default.core.keys import AUDIT, SCORE
from loan_default.model.reasons import ReasonTable
from loan_default.services.decisions.ids import valid_decision_id
from loan_default.services.decisions.recorder import DecisionRecorder
from loan_default.services.decisions.records import DecisionRecord
from loan_default.services.decisions.store import DecisionStore
from loan_default.services.model import ModelService

router = APIRouter(prefix="/decisions", tags=["decisions"])

_NOT_FOUND = "no decision with this id"
MAX_PAGE = 1000


def _owner_filter(principal: Principal) -> str | None:
    """None (every decision) for an audit key, else the caller's own key id."""
    if AUDIT in principal.scopes:
        return None
    if SCORE not in principal.scopes:
        check_scope(principal, AUDIT)  # 403 naming the scope
    return principal.key_id


def decision_store(request: Request) -> DecisionStore:
    """The app's store (the outcomes routes use it too), or 503 when recording is off."""
    recorder: DecisionRecorder = request.app.state.decisions
    if recorder.store is None:
        raise ServiceUnavailable(
            "the decision record is not available (DECISION_RECORDING is off or the store is down)"
        )
    return recorder.store


@lru_cache(maxsize=32)
def _registry_table(settings: Settings, version: str) -> ReasonTable | None:
    """The reason table of a version no longer served (its card, downloaded once)."""
    from loan_default.model.bundle import CARD_FILE
    from loan_default.model.card import ModelCard
    from loan_default.registry.client import Registry

    try:
        directory = Registry(settings).download_bundle_dir(version)
        card = ModelCard.model_validate_json((directory / CARD_FILE).read_text())
    except Exception:
        return None
    return card.reason_table()


def reason_table(request: Request, record: DecisionRecord) -> ReasonTable | None:
    """The reason table of the model that made `record` (texts in that model's own words)."""
    service: ModelService = request.app.state.model_service
    bundle = service.bundle
    if bundle is not None and bundle.version == record.model_version:
        return bundle.reason_table
    return _registry_table(request.app.state.settings, record.model_version)


def _as_data(record: DecisionRecord, table: ReasonTable | None) -> dict[str, Any]:
    data = record.as_dict()
    data["reasons"] = [{"code": code, "text": _text(table, code)} for code in record.reason_codes]
    return data


def _text(table: ReasonTable | None, code: str) -> str | None:
    if table is None:
        return None
    try:
        return table.text(code)
    except KeyError:
        return None


@router.get(
    "/{decision_id}",
    response_model=Envelope[dict[str, Any]],
    responses={
        404: {"model": ErrorEnvelope},
        422: {"model": ErrorEnvelope},
        503: {"model": ErrorEnvelope},
    },
    summary="One recorded decision: inputs, model, answer and reasons",
)
async def get_decision(
    decision_id: str, request: Request, principal: Annotated[Principal, Depends(authorize)]
) -> Response:
    owner = _owner_filter(principal)
    if not valid_decision_id(decision_id):
        raise NotFound(_NOT_FOUND)
    store = decision_store(request)
    record = await run_in_threadpool(store.get, decision_id.lower())
    if record is None or (owner is not None and record.key_id != owner):
        raise NotFound(_NOT_FOUND)
    table = await run_in_threadpool(reason_table, request, record)
    return JSONBytes(
        {"success": True, "data": _as_data(record, table), "message": "decision record"}
    )


@router.get(
    "",
    response_model=Envelope[dict[str, Any]],
    responses={422: {"model": ErrorEnvelope}, 503: {"model": ErrorEnvelope}},
    summary="Recorded decisions by reference, time range and model version, in time order",
)
async def list_decisions(
    request: Request,
    principal: Annotated[Principal, Depends(authorize)],
    reference: Annotated[str | None, Query(max_length=64)] = None,
    start: Annotated[
        IsoTime | None, Query(alias="from", description="Inclusive; ISO 8601 (UTC if no offset)")
    ] = None,
    end: Annotated[
        IsoTime | None, Query(alias="to", description="Exclusive; ISO 8601 (UTC if no offset)")
    ] = None,
    model_version: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> Response:
    owner = _owner_filter(principal)
    store = decision_store(request)
    page, next_cursor = await run_in_threadpool(
        lambda: store.query(
            reference=reference,
            start=start,
            end=end,
            model_version=model_version,
            key_id=owner,
            cursor=cursor,
            limit=limit,
        )
    )
    data = {
        "decisions": [_as_data(r, None) for r in page],
        "next_cursor": next_cursor,
    }
    return JSONBytes({"success": True, "data": data, "message": f"{len(page)} decision(s)"})
