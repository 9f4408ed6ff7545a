"""The model card: everything besides the booster that serving needs, as JSON.

It carries the calibration map (SMOTE shifts the booster's scores away from real default rates),
the decision threshold and risk bands, the feature spec serving checks against, the test metrics
for `/model/info`, and the training distribution of each feature that drift monitoring compares
live traffic with.
"""

from __future__ import annotations

import bisect
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

CARD_SCHEMA_VERSION = 1


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

    def apply(self, p: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        p = np.asarray(p, dtype=np.float64)
        if self.method == "isotonic":
            return np.asarray(np.interp(p, self.x, self.y), dtype=np.float64)
        if self.method == "sigmoid":
            eps = 1e-12
            q = np.clip(p, eps, 1 - eps)
            logit = np.log(q / (1 - q))
            return np.asarray(1.0 / (1.0 + np.exp(self.a * logit + self.b)), dtype=np.float64)
        return np.asarray(p, dtype=np.float64)

    def apply_one(self, p: float) -> float:
        """Scalar version for the single-row path, bit-identical to `apply` on the same value.

        A batch row must get exactly the probability the single predict gives. numpy's vector
        log/exp (SIMD kernels on AVX-512 machines) can differ from `math`'s in the last bit, so
        the sigmoid uses numpy's own functions on the scalar; the isotonic interpolation uses
        bisect on lists (faster than numpy for one value) in `np.interp`'s operation order.
        """
        if self.method == "isotonic":
            xs, ys = self.x, self.y
            if p <= xs[0]:
                return ys[0]
            if p >= xs[-1]:
                return ys[-1]
            j = bisect.bisect_right(xs, p) - 1
            x0, y0 = xs[j], ys[j]
            if p == x0:
                return y0
            slope = (ys[j + 1] - y0) / (xs[j + 1] - x0)
            return slope * (p - x0) + y0
        if self.method == "sigmoid":
            q = min(max(p, 1e-12), 1 - 1e-12)
            z = self.a * float(_np_log(q / (1 - q))) + self.b
            # exp overflows past this (the vector path's 1 / (1 + inf) is 0.0 too)
            return float(1.0 / (1.0 + _np_exp(z))) if z <= _EXP_MAX_ARG else 0.0
        return p


#: numpy's ufuncs, bound once (attribute lookups cost on the hot path).
_np_log = np.log
_np_exp = np.exp
_EXP_MAX_ARG = float(np.log(np.finfo(np.float64).max))


class RiskBands(BaseModel):
    """Low < medium <= Medium < high <= High."""

    model_config = ConfigDict(frozen=True)

    medium: float = Field(0.3, gt=0, lt=1)
    high: float = Field(0.7, gt=0, lt=1)

    def label(self, p: float) -> str:
        if p >= self.high:
            return "High"
        if p >= self.medium:
            return "Medium"
        return "Low"


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
    trained_at: str
    data_sha256: str
    git_commit: str = "unknown"
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
