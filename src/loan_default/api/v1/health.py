"""Probes (no auth): liveness never depends on the model; readiness does."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from loan_default.api.deps import ModelServiceDep, SettingsDep
from loan_default.api.schemas import Envelope, ErrorEnvelope, HealthData, JSONBytes, ReadyData

router = APIRouter(tags=["health"])

_HEALTHY = JSONBytes(
    {"success": True, "data": {"status": "healthy"}, "message": "service is alive"}
).body


@router.get("/healthz", response_model=Envelope[HealthData], summary="Liveness")
async def healthz() -> Response:
    return Response(_HEALTHY, media_type="application/json")


@router.get(
    "/readyz",
    response_model=Envelope[ReadyData],
    responses={503: {"model": ErrorEnvelope, "description": "no model loaded yet"}},
    summary="Readiness: 200 once a model is loaded",
)
async def readyz(request: Request, service: ModelServiceDep, settings: SettingsDep) -> Response:
    bundle = service.bundle
    data: dict[str, Any] = {
        "status": "ready" if bundle is not None else "not_ready",
        "model_loaded": bundle is not None,
        "model_name": settings.model_name,
        "model_version": bundle.version if bundle is not None else None,
        "model_alias": settings.model_alias,
    }
    batch = getattr(request.app.state, "batch", None)
    if batch is not None:
        try:
            data["broker"] = await run_in_threadpool(batch.broker_status)
        except Exception as exc:  # the broker's own failure must not fail readiness
            data["broker"] = {"status": "error", "error": type(exc).__name__}
    limiter = getattr(request.app.state, "limiter", None)
    if limiter is not None:
        data["rate_limit"] = limiter.status()
    recorder = getattr(request.app.state, "decisions", None)
    store_down = False
    if recorder is not None:
        store = await run_in_threadpool(recorder.status)
        data["decision_store"] = {**store, "recording": recorder.mode}
        store_down = recorder.mode == "required" and store.get("status") != "ok"
    if bundle is None or store_down:
        if bundle is not None:
            data["status"] = "not_ready"
            data["reason"] = "decision_store_unavailable"
            return JSONBytes(
                {
                    "success": False,
                    "error": "decision_store_unavailable",
                    "message": "the decision record is unavailable (DECISION_RECORDING=required)",
                    "detail": data,
                    "data": data,
                },
                status_code=503,
            )
        # a code, never exception text: this route is anonymous (the log has the detail)
        data["reason"] = service.last_error or (
            "alias_not_set" if service.last_check_ok else "loading"
        )
        return JSONBytes(
            {
                "success": False,
                "error": "model_not_ready",
                "message": "no model loaded yet; retrying with back-off",
                "detail": data,
                "data": data,
            },
            status_code=503,
        )
    return JSONBytes({"success": True, "data": data, "message": f"serving model v{bundle.version}"})


# Load balancers probe with HEAD: the same handlers, the body dropped by uvicorn. Kept out of the
# OpenAPI document (one operation per probe, no duplicate operation ids).
for _path, _handler in (("/healthz", healthz), ("/readyz", readyz)):
    router.add_api_route(_path, _handler, methods=["HEAD"], include_in_schema=False)
