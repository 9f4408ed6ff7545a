"""What is being served: the model card's facts a client or operator needs."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from loan_default.api.deps import ModelServiceDep
from loan_default.api.schemas import Envelope, ErrorEnvelope, JSONBytes, ModelInfoData

router = APIRouter(prefix="/model", tags=["model"])


@router.get(
    "/info",
    response_model=Envelope[ModelInfoData],
    responses={503: {"model": ErrorEnvelope}},
    summary="The served model version and its card",
)
async def model_info(service: ModelServiceDep) -> Response:
    bundle = service.require()
    card = bundle.card
    data = {
        "model_name": bundle.name,
        "model_version": bundle.version,
        "model_alias": bundle.alias,
        "model_type": card.model_type,
        "features": list(card.features),
        "raw_features": list(card.raw_features),
        "engineered_features": list(card.engineered_features),
        "trained_at": card.trained_at,
        "threshold": card.threshold,
        "threshold_objective": card.threshold_objective,
        "risk_bands": {"medium": card.risk_bands.medium, "high": card.risk_bands.high},
        "calibration": card.calibration.method,
        "test_metrics": card.test_metrics,
    }
    return JSONBytes({"success": True, "data": data, "message": f"model v{bundle.version}"})
