"""Request and response models of the HTTP API (the batch endpoints reuse `PredictionRequest`).

The request model is strict: JSON numbers only (no "123" strings, no booleans for `employed`),
finite (NaN, Infinity and overflowing literals such as 1e400 are refused), within the ranges the
model was trained on the scale of, and no field it does not know (a misspelt `reference` would
otherwise be dropped without a word). Every refusal is a 422 naming the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from starlette.responses import JSONResponse

from loan_default.core.clock import parse_utc
from loan_default.features import (
    BOUND_BY_NAME,
    REFERENCE_MAX_LENGTH,
    REFERENCE_PATTERN,
    REFERENCE_RE,
    RISK_LABELS,
)

_EMPLOYED = BOUND_BY_NAME["employed"]
_BALANCE = BOUND_BY_NAME["bank_balance"]
_SALARY = BOUND_BY_NAME["annual_salary"]
_REFERENCE_DOC = (
    f"Optional: your own id of this application, echoed back (1 to {REFERENCE_MAX_LENGTH} "
    "printable ASCII characters, no space at either end)."
)
#: The band labels as a type (the values come from the row contract).
RiskLabel = Literal[RISK_LABELS]  # type: ignore[valid-type]

T = TypeVar("T")


class JSONBytes(JSONResponse):
    """JSON via orjson (NaN would become null; the API never emits it).

    A JSONResponse subclass so FastAPI documents each route's `response_model` in OpenAPI (for
    any other response class it writes `{"type": "string"}`); rendering is orjson's.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class PredictionRequest(BaseModel):
    """One applicant. `saving_rate` is derived from these (features.engineering), never sent."""

    model_config = ConfigDict(
        strict=True,
        allow_inf_nan=False,
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"employed": 1, "bank_balance": 8754.36, "annual_salary": 532339.56},
                {
                    "employed": 0,
                    "bank_balance": 12000.0,
                    "annual_salary": 38000.0,
                    "reference": "APP-2024-000123",
                },
            ]
        },
    )

    employed: int = Field(
        ge=int(_EMPLOYED.low), le=int(_EMPLOYED.high), description=_EMPLOYED.description
    )
    bank_balance: float = Field(ge=_BALANCE.low, le=_BALANCE.high, description=_BALANCE.description)
    annual_salary: float = Field(ge=_SALARY.low, le=_SALARY.high, description=_SALARY.description)
    reference: str | None = Field(
        default=None,
        min_length=1,
        max_length=REFERENCE_MAX_LENGTH,
        description=_REFERENCE_DOC,
        json_schema_extra={"pattern": REFERENCE_PATTERN},
    )

    @field_validator("reference")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        """The pattern, checked here for a message a client can act on (pydantic's own quotes
        the regular expression); the schema still states the pattern."""
        if value is not None and not REFERENCE_RE.fullmatch(value):
            raise PydanticCustomError(
                "string_pattern_mismatch",
                "String should be printable ASCII, with no space at either end",
                {"pattern": REFERENCE_PATTERN},
            )
        return value


class Envelope(BaseModel, Generic[T]):
    success: Literal[True] = True
    data: T
    message: str


class ErrorEnvelope(BaseModel):
    success: Literal[False] = False
    error: str = Field(description="Machine-readable code, e.g. `validation_error`.")
    message: str
    detail: Any = None


class HealthData(BaseModel):
    status: Literal["healthy"]


class ReadyData(BaseModel):
    status: Literal["ready", "not_ready"]
    model_loaded: bool
    model_name: str
    model_version: str | None
    model_alias: str
    broker: dict[str, Any] | None = None
    reason: str | None = None
    """When not ready: a code (`loading`, `registry_unreachable`, `model_version_refused`); the
    detail is in the log."""
    rate_limit: dict[str, Any] | None = None
    """The rate limiter: `storage` (`memory` or `redis`) and `status` (`ok`, or `degraded` while
    its Redis is down and each process limits on its own)."""
    decision_store: dict[str, Any] | None = None
    """The decision record: `type` (`sqlite`, `postgresql`, `off`), `status` (`ok`,
    `unavailable`) and `recording` (DECISION_RECORDING). Under `required` an unavailable store
    makes the service not ready (reason `decision_store_unavailable`): it could answer nothing."""


class FeaturesUsed(BaseModel):
    employed: float
    bank_balance: float
    annual_salary: float
    saving_rate: float


class Reason(BaseModel):
    code: str = Field(description="Reason code from the deciding model's reason table.")
    text: str = Field(description="What the code means, in the deciding model's own words.")


class PredictionData(BaseModel):
    decision_id: str | None = Field(
        description="Id of this decision's durable record (GET /api/v1/decisions/{id}); null "
        "only when DECISION_RECORDING is off, or best_effort with the store down."
    )
    prediction: Literal[0, 1] = Field(description="1 = predicted to default (at the threshold).")
    probability: float = Field(ge=0, le=1, description="Calibrated probability of default.")
    default_risk: RiskLabel
    model_version: str
    features_used: FeaturesUsed
    reasons: list[Reason] = Field(
        description="Adverse-action reasons: for a decision to default (prediction 1), up to 4 "
        "codes of the features that raised the risk most, largest first; with ?explain=true for "
        "every decision; otherwise empty."
    )
    contributions: dict[str, float] | None = Field(
        default=None,
        description="With ?explain=true: XGBoost pred_contribs per feature plus `bias`, in "
        "log-odds; they sum to the raw (uncalibrated) margin.",
    )
    reference: str | None = Field(
        default=None, description="The request's `reference`, when it gave one."
    )


class ModelInfoData(BaseModel):
    model_name: str
    model_version: str
    model_alias: str | None
    model_type: str
    features: list[str]
    raw_features: list[str]
    engineered_features: list[str]
    trained_at: str
    threshold: float
    threshold_objective: str
    risk_bands: dict[str, float]
    calibration: str
    test_metrics: dict[str, float]


class DriftData(BaseModel):
    psi: dict[str, float | None]
    drift_detected: bool
    drifted_features: list[str]
    threshold: float
    samples: int
    window_size: int
    window_fill: float
    min_samples: int
    sampling_rate: float
    reference_model_version: str | None
    computed_at: str = Field(description="ISO 8601 UTC time the PSI was computed.")


def _iso_only(value: object) -> object:
    """Query times are ISO 8601 only (UTC if no offset); a bare number is refused by name."""
    return parse_utc(value) if isinstance(value, str) else value


#: A `from`/`to` query time: pydantic's lax datetime would read `925` as a Unix time (found by
#: schemathesis); this refuses it with the field named, and reads a time without offset as UTC.
IsoTime = Annotated[datetime, BeforeValidator(_iso_only)]


class ChallengerData(BaseModel):
    """Production vs the shadow challenger on the decisions of [from, to) that it scored."""

    from_: str = Field(alias="from", description="Inclusive window start, ISO 8601 UTC.")
    to: str = Field(description="Exclusive window end, ISO 8601 UTC.")
    count: int = Field(description="Decisions in the window carrying a challenger probability.")
    production_versions: list[str]
    challenger_versions: list[str]
    challenger_thresholds: dict[str, float | None] = Field(
        description="Each challenger version's card threshold (null: its card is unavailable)."
    )
    agreement_count: int = Field(description="Rows whose challenger threshold is known.")
    agreement_rate: float | None = Field(
        description="Share of those rows where the challenger's 0/1 decision at its own "
        "threshold equals production's answered one; null without rows."
    )
    pearson: float | None = Field(description="Pearson r of the probabilities (null if undefined).")
    spearman: float | None = Field(description="Spearman rho of the probabilities (average ranks).")
    realized: dict[str, Any] | None = Field(
        default=None,
        description="Outcome-based metrics of both models on these decisions; null until "
        "outcomes are recorded.",
    )
