"""Performance per (model version, UTC month of decision), and the alerts that fire on it.

Groups the decision rows and hands each group to `performance`'s two entry points: realized on the
rows with an outcome, estimated on those still waiting for one. The alert names here are the
ones the Prometheus rules (k8s/monitoring) and the performance monitor use. Pure, numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from loan_default.core.versions import version_key
from loan_default.services.performance import (
    NO_OUTCOME,
    EstimatedPerformance,
    RealizedPerformance,
    estimated_performance,
    probabilities,
    realized_performance,
)

DEFAULT_OE_BAND: Final = (0.8, 1.25)
"""An observed/expected default ratio outside this band alerts (1/1.25 = 0.8: symmetric in log)."""

REALIZED_AUC_BELOW_GATE: Final = "realized_auc_below_gate"
ESTIMATED_AUC_BELOW_GATE: Final = "estimated_auc_below_gate"
OBSERVED_EXPECTED_OUT_OF_BAND: Final = "observed_expected_out_of_band"


@dataclass(frozen=True)
class CohortPerformance:
    """One model version's decisions of one UTC month: realized on rows with an outcome,
    estimated on the rows still waiting for one."""

    model_version: str
    month: str
    """`YYYY-MM` of the decision time in UTC."""
    realized: RealizedPerformance
    estimated: EstimatedPerformance

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "month": self.month,
            "realized": self.realized.as_dict(),
            "estimated": self.estimated.as_dict(),
        }


# --- cohorts -------------------------------------------------------------------------------------
def cohort_performance(
    *,
    versions: Sequence[str] | npt.NDArray[np.str_],
    decided_at: npt.NDArray[np.datetime64],
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    thresholds: Mapping[str, float] | None = None,
) -> list[CohortPerformance]:
    """Realized and estimated performance per (model version, UTC month of decision), in that order.

    `decided_at` is a numpy datetime64 array read as UTC (numpy has no time zones; an aware
    datetime converts with `np.datetime64(dt.astimezone(UTC).replace(tzinfo=None))`, an Arrow
    timestamp column with `.to_numpy()`). Chosen over aware datetimes because a cohort query reads
    up to millions of rows: the months are then one vectorised `astype`, not a Python call a row.
    `y` is 1/0 for a known outcome and `NO_OUTCOME` (-1) for one still pending; pending rows
    feed the cohort's estimated side. `thresholds` (per model version) adds the
    precision/recall/F1 at each version's threshold to the realized side.
    """
    at = np.asarray(decided_at)
    if not np.issubdtype(at.dtype, np.datetime64):
        raise TypeError(f"decided_at must be numpy datetime64 (UTC), got {at.dtype}")
    if np.any(np.isnat(at)):
        raise ValueError("decided_at has missing times")
    names = np.asarray(versions, dtype=np.str_)
    labels = np.asarray(y)
    probs = probabilities(p)
    if not names.shape == at.shape == labels.shape == probs.shape:
        raise ValueError(
            f"arrays differ in shape: {names.shape}, {at.shape}, {labels.shape}, {probs.shape}"
        )
    if not np.all((labels == 0) | (labels == 1) | (labels == NO_OUTCOME)):
        raise ValueError(f"outcomes must be 0, 1 or {NO_OUTCOME} (pending)")
    if probs.size == 0:
        return []
    vocab, version_of = np.unique(names, return_inverse=True)
    months, month_of = np.unique(at.astype("datetime64[M]"), return_inverse=True)
    natural = sorted(range(vocab.size), key=lambda i: version_key(str(vocab[i])))
    rank = np.empty(vocab.size, dtype=np.int64)
    rank[natural] = np.arange(vocab.size)
    code = rank[version_of] * months.size + month_of  # ascending code = (version, month) order
    order = np.argsort(code, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(code[order]) != 0])
    groups = [
        (str(vocab[version_of[rows[0]]]), str(months[month_of[rows[0]]]), rows)
        for rows in np.split(order, starts[1:])
    ]
    out = []
    for version, month, rows in groups:
        known, pending = rows[labels[rows] != NO_OUTCOME], rows[labels[rows] == NO_OUTCOME]
        threshold = None if thresholds is None else thresholds.get(version)
        out.append(
            CohortPerformance(
                model_version=version,
                month=month,
                realized=realized_performance(y=labels[known], p=probs[known], threshold=threshold),
                estimated=estimated_performance(p=probs[pending]),
            )
        )
    return out


# --- alerts --------------------------------------------------------------------------------------
def performance_alerts(
    metrics: RealizedPerformance | EstimatedPerformance,
    *,
    min_auc: float,
    oe_band: tuple[float, float] = DEFAULT_OE_BAND,
    min_count: int,
) -> list[str]:
    """Names of the alerts that fire for one cohort (the Prometheus rules mirror these).

    `min_auc` is the promotion gate (`GATE_MIN_ROC_AUC`). Below `min_count` rows nothing fires:
    the observed/expected ratio's relative standard error is about 1/sqrt(expected defaults), so
    at a 3.3 % default rate a +-25 % band needs ~2,000 rows to be two standard errors wide. An
    estimate carries no observed/expected ratio (it is 1 by construction).
    """
    if metrics.count < min_count:
        return []
    alerts = []
    if isinstance(metrics, RealizedPerformance):
        if metrics.roc_auc is not None and metrics.roc_auc < min_auc:
            alerts.append(REALIZED_AUC_BELOW_GATE)
        ratio = metrics.observed_expected_ratio
        if ratio is not None and not oe_band[0] <= ratio <= oe_band[1]:
            alerts.append(OBSERVED_EXPECTED_OUT_OF_BAND)
    elif metrics.expected_roc_auc is not None and metrics.expected_roc_auc < min_auc:
        alerts.append(ESTIMATED_AUC_BELOW_GATE)
    return alerts
