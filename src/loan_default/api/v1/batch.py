"""PLACEHOLDER - batch routes arrive with the batch work (`/api/v1/predict/batch...`)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from loan_default.core.config import Settings

router = APIRouter(prefix="/predict/batch", tags=["batch"])


def attach(app: FastAPI, settings: Settings) -> None:
    """Hook called by create_app: the batch package puts its service on app.state.batch."""
