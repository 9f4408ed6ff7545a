"""The model card: everything besides the booster that serving needs, as JSON.

It carries the calibration map (SMOTE shifts the booster's scores away from real default rates),
the decision threshold and risk bands, the feature spec serving checks against, the test metrics
for `/model/info`, the training distribution of each feature that drift monitoring compares
live traffic with, the monotone constraints the booster was trained with and its reason table.

Fields added after schema 1 have defaults, so older cards still load (no schema bump needed).
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from loan_default.model.reasons import ReasonTable, build_table

CARD_SCHEMA_VERSION = 1

#: What calibration takes and gives: one probability (numpy scalar) or an array of them.
_P = TypeVar("_P", np.floating[Any], npt.NDArray[np.floating[Any]])


class Calibration(BaseModel):
    """Monotone map from the booster's probability to a calibrated probability of default.

    isotonic: piecewise-linear interpolation through (x, y); sigmoid (Platt): 1/(1+exp(a*logit+b)).
    """

    model_config = ConfigDict(frozen=True)

    method: Literal["isotonic", "sigmoid", "identity"]
    x: list[float] = Field(default_factory=list)
    y: list[float] = Field(default_factory=list)
    a: float = 0.0
    b: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> Calibration:
        if self.method == "isotonic":
            if len(self.x) < 2 or len(self.x) != len(self.y):
                raise ValueError("isotonic calibration needs >= 2 (x, y) points of equal length")
            if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)):
                raise ValueError("isotonic calibration x must be non-decreasing")
        return self

    def apply(self, p: _P) -> _P:
        """Calibrated probability: the one calibration code path.

        Generic over one value and an array: the same ufuncs run either way, so a value gets
        exactly its result inside an array (numpy computes a value the same alone or in a SIMD
        lane: tests/training/test_calibration.py). Training and the parity check call it; the
        served graph has the Platt map folded in (`model.graph`), so serving calls it only for
        an isotonic map, which cannot be folded.
        """
        q = np.float64(p)  # float64 scalar, or a float64 copy of an array
        if self.method == "isotonic":
            return np.interp(q, self.x, self.y)  # type: ignore[return-value]
        if self.method == "sigmoid":
            q = np.minimum(np.maximum(q, _EPS), 1 - _EPS)
            return 1.0 / (1.0 + np.exp(self.a * np.log(q / (1 - q)) + self.b))  # type: ignore[no-any-return]
        return q  # type: ignore[return-value]


#: Probabilities are clipped to [eps, 1 - eps] before the logit (0 and 1 have none).
_EPS = 1e-12


class RiskBands(BaseModel):
    """Band edges: Low below `medium`, Medium from `medium`, High from `high`.

    The labels and their codes are the row contract's (`features.RISK_LABELS`, `risk_codes`).
    """

    model_config = ConfigDict(frozen=True)

    medium: float = Field(0.3, gt=0, lt=1)
    high: float = Field(0.7, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> RiskBands:
        if self.medium >= self.high:
            raise ValueError("risk band edges must satisfy medium < high")
        return self


#: Bins of the score distribution a card records: ten equal-width bins of the probability.
SCORE_EDGES: Final = tuple(i / 10 for i in range(11))


class FeatureDistribution(BaseModel):
    """Training histogram of one feature: bin edges (len k+1) and proportions (len k)."""

    model_config = ConfigDict(frozen=True)

    edges: list[float]
    proportions: list[float]

    @model_validator(mode="after")
    def _check(self) -> FeatureDistribution:
        if len(self.edges) != len(self.proportions) + 1:
            raise ValueError("edges must have one more element than proportions")
        return self


class ModelCard(BaseModel):
    """Serialized as `model_card.json` beside the booster in every model version."""

    schema_version: int = CARD_SCHEMA_VERSION
    model_type: str
    features: list[str]
    raw_features: list[str]
    engineered_features: list[str]
    calibration: Calibration
    threshold: float = Field(ge=0, le=1)
    threshold_objective: str
    risk_bands: RiskBands
    test_metrics: dict[str, float]
    cv_metrics: dict[str, float] = Field(default_factory=dict)
    training_distribution: dict[str, FeatureDistribution]
    score_distribution: FeatureDistribution | None = None
    """The calibrated probabilities of the training rows over `SCORE_EDGES` (what "scores now vs
    training" compares with); None on cards written before it was recorded."""
    trained_at: str
    data_sha256: str
    git_commit: str = "unknown"
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    monotone_constraints: dict[str, int] = Field(default_factory=dict)
    """Feature -> -1/0/+1 as trained; empty on cards written before constraints were recorded
    (read as unconstrained)."""
    reasons: ReasonTable | None = None
    """The reason table of this model; None on older cards (the bundle then builds the code's
    table from `monotone_constraints`, see `ModelBundle`)."""

    @model_validator(mode="after")
    def _check_constraints(self) -> ModelCard:
        bad = {f: v for f, v in self.monotone_constraints.items() if v not in (-1, 0, 1)}
        if bad:
            raise ValueError(f"monotone constraints must be -1, 0 or 1: {bad}")
        return self

    def reason_table(self) -> ReasonTable:
        """The table this model explains itself with. Cards written before tables were stored
        get the code's table, built from the constraints the card records ({} on those cards:
        neutral texts, no direction claimed)."""
        return self.reasons if self.reasons is not None else build_table(self.monotone_constraints)
