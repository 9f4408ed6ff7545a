"""Replay: re-score a recorded decision's inputs with the model version that made it.

The proof an auditor asks for: the same inputs through the same model give the same
probability, prediction, risk band and reason codes, bit for bit. The version is loaded from
the MLflow registry (once per version), scored through the same kernel the API serves with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loan_default.model.bundle import ModelBundle
from loan_default.services.decisions.records import DecisionRecord


@dataclass(frozen=True, slots=True)
class Replayed:
    record: DecisionRecord
    probability: float
    prediction: int
    risk_band: str
    reason_codes: tuple[str, ...]

    @property
    def identical(self) -> bool:
        r = self.record
        return (
            self.probability == r.probability
            and self.prediction == r.prediction
            and self.risk_band == r.risk_band
            and self.reason_codes == r.reason_codes
        )

    def as_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "decision_id": r.decision_id,
            "model_version": r.model_version,
            "identical": self.identical,
            "recorded": {
                "probability": r.probability,
                "prediction": r.prediction,
                "risk_band": r.risk_band,
                "reason_codes": list(r.reason_codes),
            },
            "replayed": {
                "probability": self.probability,
                "prediction": self.prediction,
                "risk_band": self.risk_band,
                "reason_codes": list(self.reason_codes),
            },
        }


def replay(record: DecisionRecord, bundle: ModelBundle) -> Replayed:
    """Score `record`'s raw inputs with `bundle` (which must be the version that decided).

    Reason codes are compared as recorded: a decision recorded without codes (not adverse, not
    explained) is replayed without them."""
    if bundle.version != record.model_version:
        raise ValueError(
            f"decision {record.decision_id} was made by v{record.model_version}, not "
            f"v{bundle.version}"
        )
    from loan_default.features import feature_row

    row = feature_row(record.employed, record.bank_balance, record.annual_salary)
    scored = bundle.score_row(row)
    codes = bundle.reasons_row(row) if (scored.prediction or record.reason_codes) else ()
    return Replayed(record, scored.probability, scored.prediction, scored.default_risk, codes)


class VersionCache:
    """Model versions loaded from the registry, once each."""

    def __init__(self, load: Any) -> None:
        self._load = load
        self._bundles: dict[str, ModelBundle] = {}

    def get(self, version: str) -> ModelBundle:
        if version not in self._bundles:
            self._bundles[version] = self._load(version)
        return self._bundles[version]
