"""Single-applicant scoring: the hot path.

The handler reads the current bundle once (inside `predict_one`), so a model swap mid-request
can't mix versions; it answers with pre-serialized orjson bytes (skipping FastAPI's response
re-validation, which cost more than the model call).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from loan_default.api.deps import DriftMonitorDep, ModelServiceDep, require_json
from loan_default.api.schemas import (
    Envelope,
    ErrorEnvelope,
    JSONBytes,
    PredictionData,
    PredictionRequest,
)
from loan_default.core.errors import ModelNotReady
from loan_default.services import metrics

router = APIRouter(prefix="/predict", tags=["predict"])
_recorder = metrics.PredictionRecorder()


@router.post(
    "",
    response_model=Envelope[PredictionData],
    dependencies=[Depends(require_json)],
    responses={
        401: {"model": ErrorEnvelope},
        403: {"model": ErrorEnvelope},
        413: {"model": ErrorEnvelope},
        415: {"model": ErrorEnvelope},
        422: {"model": ErrorEnvelope},
        429: {"model": ErrorEnvelope},
        503: {"model": ErrorEnvelope},
    },
    summary="Probability of default for one applicant",
)
async def predict(
    payload: PredictionRequest,
    request: Request,
    service: ModelServiceDep,
    drift: DriftMonitorDep,
    explain: Annotated[
        bool, Query(description="Add XGBoost per-feature contributions (log-odds).")
    ] = False,
) -> Response:
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
    _recorder.observe(
        model_version=result.model_version,
        prediction=result.prediction,
        seconds=time.perf_counter() - start,
    )
    features = result.features_used
    drift.observe(
        features["employed"],
        features["bank_balance"],
        features["annual_salary"],
        features["saving_rate"],
    )
    request.state.model_version = result.model_version
    return JSONBytes(
        {
            "success": True,
            "data": result.as_dict(),
            "message": f"{result.default_risk} default risk",
        }
    )
