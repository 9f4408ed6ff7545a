"""The application factory. Importing this module loads nothing; the lifespan does.

`loan-default serve` runs `loan_default.wiring:create_service_app`, which hands the Celery
dispatcher in (this package never imports the worker). The lifespan builds the ModelService from the
MLflow registry and starts its background thread, which retries with back-off until the alias
resolves (`/readyz` answers 503 meanwhile) and then follows the alias every
MODEL_RELOAD_INTERVAL_S, swapping versions atomically.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import Depends, FastAPI
from loguru import logger
from starlette.concurrency import run_in_threadpool

from loan_default.api import errors as api_errors
from loan_default.api.deps import KeyTable, authorize
from loan_default.api.middleware import RequestMiddleware
from loan_default.api.ratelimit import RateLimiter
from loan_default.api.schemas import ErrorEnvelope, JSONBytes
from loan_default.api.v1 import batch, health, model, monitoring, predict
from loan_default.api.v1 import decisions as decision_routes
from loan_default.api.v1 import outcomes as outcome_routes
from loan_default.core.clock import Clock, utc_now
from loan_default.core.config import Settings, get_settings
from loan_default.core.logging import AccessLog, configure_logging
from loan_default.model.bundle import ModelBundle
from loan_default.services import metrics
from loan_default.services.batch import Dispatcher
from loan_default.services.challenger import Challenger
from loan_default.services.decisions.recorder import DecisionRecorder
from loan_default.services.drift import DriftMonitor
from loan_default.services.model import ModelService
from loan_default.services.performance_monitor import PerformanceMonitor

API_PREFIX = "/api/v1"
#: What the auth dependency may answer on every /api/v1 route (documented in OpenAPI).
AUTH_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorEnvelope, "description": "no X-API-Key header"},
    403: {
        "model": ErrorEnvelope,
        "description": "the API key is not accepted (`forbidden`), or lacks the scope the route "
        "needs (`insufficient_scope`, `detail.required_scope` names it)",
    },
    429: {"model": ErrorEnvelope, "description": "rate limit exceeded (see Retry-After)"},
}


def create_app(
    settings: Settings | None = None,
    *,
    model_service: ModelService | None = None,
    dispatcher: Dispatcher | None = None,
    decisions: DecisionRecorder | None = None,
    challenger: Challenger | None = None,
    clock: Clock = utc_now,
) -> FastAPI:
    """Build the app from its collaborators.

    `model_service`: serve a given (e.g. in-memory) model instead of the registry's alias.
    `dispatcher`: publishes batch chunk tasks (the Celery app in production); without one, or
    without a job store URL, the batch routes answer 503 and /readyz says `not_configured`.
    `decisions`: where decisions are recorded; by default DECISION_STORE_URL, per
    DECISION_RECORDING (opened, and migrated, by the lifespan).
    `challenger`: the shadow model; by default CHALLENGER_ALIAS followed in the registry (none
    when the setting is empty, or when `model_service` is given). It scores in the decision
    writer's thread, never in the answer.
    `clock`: when decisions are made (a prediction's `decided_at`, a batch job's `created_at`)
    and where the performance window ends; the wall clock by default, a fake one in the
    simulated-year test. A given `decisions` recorder keeps its own.
    """
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = model_service or ModelService.from_registry(settings)
        drift = DriftMonitor.from_settings(settings)

        def on_swap(bundle: ModelBundle) -> None:
            drift.set_reference(bundle.card.training_distribution, version=bundle.version)
            metrics.set_model_info(
                version=bundle.version, alias=bundle.alias, previous=app.state.served_version
            )
            app.state.served_version = bundle.version

        app.state.served_version = None
        service.on_swap(on_swap)
        if service.bundle is not None:
            on_swap(service.bundle)
        app.state.model_service = service
        app.state.drift = drift
        app.state.decisions = decisions or await run_in_threadpool(
            partial(DecisionRecorder.from_settings, settings, now=clock)
        )
        app.state.performance = PerformanceMonitor(settings, app.state.decisions, now=clock)
        app.state.performance.start()
        # a given model service (tests, embedding) comes with its challenger or none
        shadow = challenger or (
            Challenger.from_registry(settings, production=service)
            if model_service is None
            else None
        )
        app.state.challenger = shadow
        if shadow is not None:
            app.state.decisions.set_group_hook(shadow.score_records)
        await app.state.decisions.start_writer()
        service.start_background_reload()
        if shadow is not None:
            shadow.start()  # in the background: production's first load is not delayed by it
        if not service.ready:
            # Each uvicorn worker loads its own model. Without this wait a pod with two workers
            # turned ready when one had loaded, and requests routed to the other got 503
            # `model_not_ready` (seen in the Kubernetes container test). Bounded: with the
            # registry down the worker serves 503 with a reason and keeps retrying.
            await run_in_threadpool(service.first_attempt.wait, settings.model_startup_wait_s)
        drift.start()
        logger.info(
            "API up: model {}@{}, rate limit {}/min ({}), {} worker pid {}",
            settings.model_name,
            settings.model_alias,
            settings.rate_limit_per_minute,
            settings.rate_limit_storage_uri.split("://", 1)[0],
            "multiprocess" if metrics.multiprocess_dir() else "single-process",
            os.getpid(),
        )
        # Everything alive now (the imported libraries, mlflow's included) lives as long as the
        # process: move it out of the cyclic GC's reach, so a full collection scans what requests
        # allocate instead of ~230k start-up objects (~140 ms here, a latency spike for every
        # request in flight). The model itself loads in the background thread; its Python
        # objects are few (the booster and ONNX session live in C++).
        gc.freeze()
        try:
            yield
        finally:
            service.stop()
            if shadow is not None:
                shadow.stop()
            drift.stop()
            app.state.performance.stop()
            app.state.batch.close()
            await run_in_threadpool(app.state.decisions.close)
            await app.state.limiter.close()
            metrics.mark_process_dead(os.getpid())

    app = FastAPI(
        title="loan-default",
        version="1.0.0",
        summary="Calibrated probability of loan default (XGBoost), with drift monitoring.",
        lifespan=lifespan,
        default_response_class=JSONBytes,
        # FastAPI's native OpenTelemetry hook checks the global providers on every request
        # (~10 us here); the service exports Prometheus metrics and runs no OTel SDK.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.api_keys = KeyTable.from_settings(settings)
    app.state.limiter = RateLimiter(
        per_minute=settings.rate_limit_per_minute,
        storage_uri=settings.rate_limit_storage_uri,
        key_prefix=settings.rate_limit_key_prefix,
        storage_timeout_s=settings.rate_limit_storage_timeout_s,
    )
    api_errors.install(app)

    # The predict route is a plain route on the app, matched first, and authorizes inline
    # (`await authorize(request)` first thing in the handler): FastAPI's dependency solver
    # costs ~100 us a request, a fifth of the hot path.
    predict.register(app, prefix=API_PREFIX, responses=AUTH_ERRORS)
    app.include_router(health.router)
    app.include_router(monitoring.exposition_router)
    # Each other v1 router is mounted directly (one routing level less than a /api/v1 parent
    # router, ~25 us a request); every route under /api/v1 requires a key and counts against
    # the limit.
    for router in (
        batch.router,
        decision_routes.router,
        outcome_routes.router,
        model.router,
        monitoring.router,
    ):
        app.include_router(
            router, prefix=API_PREFIX, dependencies=[Depends(authorize)], responses=AUTH_ERRORS
        )
    app.state.batch = batch.BatchState.build(
        settings,
        dispatcher=dispatcher,
        drift=lambda: getattr(app.state, "drift", None),
        now=clock,
    )

    if settings.cors_origin_list:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type", "X-Request-ID"],
        )
    app.add_middleware(
        RequestMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_limits={
            **batch.body_limits(settings, prefix=API_PREFIX),
            **outcome_routes.body_limits(settings, prefix=API_PREFIX),
        },
        body_read_timeout_s=settings.body_read_timeout_s,
        body_min_rate_bytes_s=settings.body_min_rate_bytes_s,
        access_log=AccessLog(settings),
    )
    return app
