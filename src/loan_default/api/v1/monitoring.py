"""Drift report (authenticated, under /api/v1) and the Prometheus scrape (no auth, at /metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, Response

from loan_default.api.deps import DriftMonitorDep
from loan_default.api.schemas import DriftData, Envelope, JSONBytes
from loan_default.services import metrics

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
