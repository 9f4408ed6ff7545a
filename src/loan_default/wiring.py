"""The composition root: builds the API with the batch worker's dispatcher handed in.

`api/` and `worker/` never import each other; this module is the one place that knows both.
`loan-default serve` points uvicorn at `create_service_app` (a factory, so every uvicorn worker
process builds its own app after the fork).
"""

from __future__ import annotations

from fastapi import FastAPI

from loan_default.api.app import create_app
from loan_default.core.config import Settings, get_settings
from loan_default.services.batch import Dispatcher


def dispatcher_for(settings: Settings) -> Dispatcher | None:
    """The Celery dispatcher when a broker is configured; None leaves the batch routes off."""
    if not settings.celery_broker_url:
        return None
    from loan_default.worker.celery_app import CeleryDispatcher

    return CeleryDispatcher.from_settings(settings)


def create_service_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    return create_app(settings, dispatcher=dispatcher_for(settings))
