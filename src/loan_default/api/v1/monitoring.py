"""Drift, performance, challenger and the HTML report (authenticated, under /api/v1) and the
Prometheus scrape (no auth, at /metrics)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from loan_default.api.deps import DriftMonitorDep, Principal, require_scope
from loan_default.api.schemas import (
    ChallengerData,
    DriftData,
    Envelope,
    ErrorEnvelope,
    IsoTime,
    JSONBytes,
)
from loan_default.api.v1.decisions import decision_store
from loan_default.core.config import Settings
from loan_default.core.errors import InvalidInput, ServiceUnavailable
from loan_default.core.keys import AUDIT
from loan_default.services import challenger_report, metrics
from loan_default.services import report as report_service
from loan_default.services.challenger import Challenger
from loan_default.services.model import ModelService
from loan_default.services.performance_monitor import PerformanceMonitor, publish

router = APIRouter(prefix="/monitoring", tags=["monitoring"])
exposition_router = APIRouter(tags=["monitoring"])


@router.get(
    "/drift",
    response_model=Envelope[DriftData],
    summary="PSI per feature: recent traffic vs the model card's training distribution",
)
async def drift(monitor: DriftMonitorDep) -> Response:
    report = await run_in_threadpool(monitor.compute)
    message = (
        f"drift detected in {', '.join(report.drifted_features)}"
        if report.drift_detected
        else (
            "no drift detected"
            if report.samples >= report.min_samples
            else f"collecting samples ({report.samples}/{report.min_samples} needed)"
        )
    )
    return JSONBytes({"success": True, "data": report.as_dict(), "message": message})


@router.get(
    "/performance",
    response_model=Envelope[dict[str, Any]],
    responses={
        403: {"model": ErrorEnvelope},
        422: {"model": ErrorEnvelope},
        503: {"model": ErrorEnvelope},
    },
    summary="Realized and estimated performance per model version and monthly cohort",
)
async def performance(
    request: Request,
    _: Annotated[Principal, Depends(require_scope(AUDIT))],
    start: Annotated[
        IsoTime | None,
        Query(alias="from", description="Inclusive; ISO 8601 (default: the window before `to`)"),
    ] = None,
    end: Annotated[
        IsoTime | None, Query(alias="to", description="Exclusive; ISO 8601 (default: now)")
    ] = None,
    model_version: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Decisions with an outcome give realized metrics (ROC-AUC, PR-AUC, Brier, KS, the
    observed/expected default ratio, a 10-bin reliability table); those still waiting give
    estimated ones from their calibrated probabilities. Also sets the `loan_model_*` gauges."""
    monitor: PerformanceMonitor = request.app.state.performance
    report = await run_in_threadpool(
        lambda: monitor.report(start=start, end=end, model_version=model_version)
    )
    if report is None:
        raise ServiceUnavailable(
            "the decision record is not available (DECISION_RECORDING=off, or the store is down)"
        )
    if model_version is None:
        publish(report)
    alerts = sorted({a for v in report.versions for a in v.alerts})
    message = f"alerts: {', '.join(alerts)}" if alerts else "no performance alert"
    return JSONBytes({"success": True, "data": report.as_dict(), "message": message})


def _json_error(description: str) -> dict[str, Any]:
    """An error envelope in JSON beside an HTML 200: with `model=`, FastAPI would document it
    under the route's own media type (text/html). The other routes register the schema."""
    schema = {"$ref": f"#/components/schemas/{ErrorEnvelope.__name__}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


@router.get(
    "/report",
    response_class=HTMLResponse,
    responses={
        200: {
            "description": "one self-contained HTML page (inline SVG charts; renders offline)",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
        # every error is the JSON envelope, not text/html (the router-wide 401/429 would be
        # documented under this route's HTML media type otherwise: schemathesis ST105)
        401: _json_error("no X-API-Key header"),
        403: _json_error("the key lacks the `audit` scope (or is not accepted)"),
        422: _json_error("`from`/`to` not ISO 8601, or from >= to"),
        429: _json_error("rate limit exceeded (see Retry-After)"),
        503: _json_error("the decision record is not available"),
    },
    dependencies=[Depends(require_scope(AUDIT))],
    summary="The monitoring report: drift, default rates, calibration, ROC, score distribution",
)
async def monitoring_report(
    request: Request,
    start: Annotated[
        IsoTime | None,
        Query(alias="from", description="Inclusive; ISO 8601 (default: the window before `to`)"),
    ] = None,
    end: Annotated[
        IsoTime | None, Query(alias="to", description="Exclusive; ISO 8601 (default: now)")
    ] = None,
) -> Response:
    """The page `loan-default report` writes, over the decisions of [from, to): PSI per
    feature by month against the serving model's card, realized vs expected default rate by
    monthly cohort, reliability diagram, ROC of production vs challenger, score distribution."""
    settings: Settings = request.app.state.settings
    end = end or datetime.now(UTC)
    if start is None:  # the window before `to`, or as much of it as the calendar has
        window = timedelta(days=settings.performance_window_days)
        start = end - min(window, end - datetime.min.replace(tzinfo=UTC))
    if start >= end:
        raise InvalidInput("`from` must be before `to`")
    store = decision_store(request)
    bundle = request.app.state.model_service.bundle
    page = await run_in_threadpool(
        lambda: report_service.build(
            store,
            settings=settings,
            start=start,
            end=end,
            card=None if bundle is None else bundle.card,
            card_version=None if bundle is None else bundle.version,
        )
    )
    return HTMLResponse(page)


#: The window of /monitoring/challenger when `from` is not given: the last 30 days to `to`.
DEFAULT_WINDOW = timedelta(days=30)


@lru_cache(maxsize=32)
def _registry_threshold(settings: Settings, version: str) -> float | None:
    """The card threshold of a version no longer loaded (its card, downloaded once)."""
    from loan_default.model.bundle import CARD_FILE
    from loan_default.model.card import ModelCard
    from loan_default.registry.client import Registry

    try:
        directory = Registry(settings).download_bundle_dir(version)
        card = ModelCard.model_validate_json((directory / CARD_FILE).read_text())
    except Exception:
        return None
    return float(card.threshold)


def _threshold_of(request: Request) -> challenger_report.ThresholdOf:
    """A version's decision threshold: from a loaded bundle when it is one, else its card."""
    state = request.app.state
    service: ModelService = state.model_service
    shadow: Challenger | None = getattr(state, "challenger", None)
    loaded = [service.bundle, shadow.service.bundle if shadow is not None else None]
    known = {b.version: float(b.card.threshold) for b in loaded if b is not None}

    def threshold(version: str) -> float | None:
        if version in known:
            return known[version]
        return _registry_threshold(state.settings, version)

    return threshold


@router.get(
    "/challenger",
    response_model=Envelope[ChallengerData],
    responses={
        403: {
            "model": ErrorEnvelope,
            "description": "the key lacks the `audit` scope (or is not accepted)",
        },
        422: {"model": ErrorEnvelope, "description": "`from`/`to` not ISO 8601, or from >= to"},
        503: {"model": ErrorEnvelope, "description": "the decision record is not available"},
    },
    dependencies=[Depends(require_scope(AUDIT))],
    summary="Production vs challenger on the shadow-scored decisions of a time window",
)
async def challenger(
    request: Request,
    start: Annotated[
        IsoTime | None,
        Query(
            alias="from", description="Inclusive; ISO 8601 (UTC if no offset); default to - 30 days"
        ),
    ] = None,
    end: Annotated[
        IsoTime | None,
        Query(alias="to", description="Exclusive; ISO 8601 (UTC if no offset); default now"),
    ] = None,
) -> Response:
    """Count, agreement rate of the 0/1 decisions (the challenger's at its own card threshold),
    Pearson and Spearman correlation of the probabilities, and the versions involved, over the
    decisions that carry a challenger probability. `realized`: metrics of both models on the
    shadow-scored decisions whose outcome is known (null until there is one)."""
    end = end or datetime.now(UTC)
    start = start or end - DEFAULT_WINDOW
    if start >= end:
        raise InvalidInput("`from` must be before `to`")
    store = decision_store(request)
    rows = await run_in_threadpool(store.challenger_rows, start, end)
    threshold_of = _threshold_of(request)
    data = await run_in_threadpool(
        lambda: challenger_report.report(
            rows,
            start=start,
            end=end,
            threshold_of=threshold_of,
            realized=lambda: challenger_report.realized_both(store.outcomes_joined(start, end)),
        )
    )
    message = f"{data['count']} shadow-scored decision(s)"
    return JSONBytes({"success": True, "data": data, "message": message})


@exposition_router.get(
    "/metrics",
    include_in_schema=True,
    response_class=PlainTextResponse,
    summary="Prometheus metrics (text exposition format)",
)
async def prometheus_metrics(request: Request) -> Response:
    batch = getattr(request.app.state, "batch", None)
    if batch is not None:  # batch chunks scored by the workers since the last scrape
        await run_in_threadpool(batch.collect_metrics)
    body = await run_in_threadpool(metrics.render)
    return Response(body, media_type=metrics.CONTENT_TYPE)


# HEAD for load balancers and uptime checks, like the probes (api/v1/health.py)
exposition_router.add_api_route(
    "/metrics", prometheus_metrics, methods=["HEAD"], include_in_schema=False
)
