"""Is the model still right: realized and estimated performance from the decision record.

Reads decisions joined with their outcomes (`DecisionStore.outcomes_joined`), computes per model
version (over a window) and per (version, month of decision) cohort the realized metrics of the
decisions with an outcome and the estimated metrics of those still waiting for one
(`services.performance`), decides the alerts with `performance_alerts` (thresholds from the
settings: the promotion gate's ROC-AUC, the observed/expected band, the minimum count) and
publishes everything as Prometheus gauges. The alert rules only read the published flags, so the
thresholds have one definition (the settings) and the rules cannot drift from the endpoint.

Protocol-neutral: the monitoring route calls `report`, the API's lifespan runs `start` (a daemon
thread that refreshes the gauges every PERFORMANCE_REFRESH_S over the trailing window).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from loguru import logger

from loan_default.core.clock import Clock, utc_iso, utc_now
from loan_default.core.config import Settings
from loan_default.core.versions import version_key
from loan_default.services import metrics
from loan_default.services.decisions.outcome_reads import JoinedOutcomes
from loan_default.services.decisions.recorder import DecisionRecorder
from loan_default.services.performance import (
    NO_OUTCOME,
    EstimatedPerformance,
    RealizedPerformance,
    estimated_performance,
    realized_performance,
)
from loan_default.services.performance_cohorts import (
    ESTIMATED_AUC_BELOW_GATE,
    OBSERVED_EXPECTED_OUT_OF_BAND,
    REALIZED_AUC_BELOW_GATE,
    CohortPerformance,
    cohort_performance,
    performance_alerts,
)

ALERTS = (REALIZED_AUC_BELOW_GATE, ESTIMATED_AUC_BELOW_GATE, OBSERVED_EXPECTED_OUT_OF_BAND)


@dataclass(frozen=True, slots=True)
class VersionPerformance:
    """One model version over the window: decided, with outcome (realized), without (estimated)."""

    model_version: str
    decisions: int
    realized: RealizedPerformance
    estimated: EstimatedPerformance
    alerts: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "decisions": self.decisions,
            "realized": self.realized.as_dict(),
            "estimated": self.estimated.as_dict(),
            "alerts": list(self.alerts),
        }


@dataclass(frozen=True, slots=True)
class PerformanceReport:
    start: datetime
    end: datetime
    versions: tuple[VersionPerformance, ...]
    cohorts: tuple[CohortPerformance, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": utc_iso(self.start.timestamp()),
            "to": utc_iso(self.end.timestamp()),
            "versions": [v.as_dict() for v in self.versions],
            "cohorts": [c.as_dict() for c in self.cohorts],
        }


def build_report(
    joined: JoinedOutcomes, *, start: datetime, end: datetime, settings: Settings
) -> PerformanceReport:
    """Pure: the report of already-joined rows (the tests feed it directly)."""
    thresholds = {
        str(v): float(joined.threshold[np.argmax(joined.model_version == v)])
        for v in np.unique(joined.model_version)
    }
    band = (settings.performance_oe_band_low, settings.performance_oe_band_high)
    versions = []
    for version in sorted(thresholds, key=version_key):
        rows = joined.model_version == version
        y, p = joined.defaulted[rows], joined.probability[rows]
        known = y != NO_OUTCOME
        realized = realized_performance(y=y[known], p=p[known], threshold=thresholds[version])
        estimated = estimated_performance(p=p[~known])
        alerts = [
            *performance_alerts(
                realized,
                min_auc=settings.gate_min_roc_auc,
                oe_band=band,
                min_count=settings.performance_min_outcomes,
            ),
            *performance_alerts(
                estimated,
                min_auc=settings.gate_min_roc_auc,
                oe_band=band,
                min_count=settings.performance_min_outcomes,
            ),
        ]
        versions.append(
            VersionPerformance(version, int(rows.sum()), realized, estimated, tuple(alerts))
        )
    cohorts = cohort_performance(
        versions=joined.model_version,
        decided_at=joined.decided_at,
        y=joined.defaulted,
        p=joined.probability,
        thresholds=thresholds,
    )
    return PerformanceReport(start, end, tuple(versions), tuple(cohorts))


def publish(report: PerformanceReport) -> None:
    """Set the gauges of every version in the report (a version not in it keeps its last)."""
    for v in report.versions:
        label = v.model_version
        r, e = v.realized, v.estimated
        metrics.PERF_OUTCOMES.labels(label).set(r.count)
        metrics.PERF_PENDING.labels(label).set(e.count)
        for gauge, value in (
            (metrics.PERF_REALIZED_AUC, r.roc_auc),
            (metrics.PERF_REALIZED_DEFAULT_RATE, r.observed_default_rate),
            (metrics.PERF_EXPECTED_DEFAULT_RATE, r.mean_predicted),
            (metrics.PERF_OBSERVED_EXPECTED, r.observed_expected_ratio),
            (metrics.PERF_REALIZED_BRIER, r.brier),
            (metrics.PERF_ESTIMATED_AUC, e.expected_roc_auc),
            (metrics.PERF_ESTIMATED_DEFAULT_RATE, e.expected_default_rate),
        ):
            gauge.labels(label).set(float("nan") if value is None else value)
        for alert in ALERTS:
            metrics.PERF_ALERT.labels(label, alert).set(1 if alert in v.alerts else 0)


class PerformanceMonitor:
    """Computes reports from the decision store and keeps the gauges fresh."""

    def __init__(
        self, settings: Settings, recorder: DecisionRecorder, *, now: Clock = utc_now
    ) -> None:
        """`now` ends the trailing window when none is given (the decisions' clock)."""
        self.settings = settings
        self.now = now
        self.recorder = recorder
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def report(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        model_version: str | None = None,
    ) -> PerformanceReport | None:
        """None when no decision store is open (recording off, or the store is down)."""
        store = self.recorder.store
        if store is None:
            return None
        end = end or self.now()
        start = start or end - timedelta(days=self.settings.performance_window_days)
        joined = store.outcomes_joined(start, end, model_version=model_version)
        return build_report(joined, start=start, end=end, settings=self.settings)

    def refresh(self) -> PerformanceReport | None:
        report = self.report()
        if report is not None:
            publish(report)
        return report

    def start(self) -> None:
        if self._thread is not None or self.settings.performance_refresh_s <= 0:
            return

        def run() -> None:
            while not self._stop.wait(self.settings.performance_refresh_s):
                try:
                    self.refresh()
                except Exception:  # a failed refresh keeps the last gauges; the next retries
                    logger.exception("performance refresh failed")

        self._thread = threading.Thread(target=run, name="performance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
