"""Drift report (authenticated, under /api/v1) and the Prometheus scrape (no auth, at /metrics)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, Response

from loan_default.api.deps import DriftMonitorDep, Principal, require_scope
from loan_default.api.schemas import DriftData, Envelope, ErrorEnvelope, IsoTime, JSONBytes
from loan_default.core.errors import ServiceUnavailable
from loan_default.core.keys import AUDIT
from loan_default.services import metrics
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
