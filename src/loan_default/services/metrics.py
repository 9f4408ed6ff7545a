"""Every Prometheus object of the service, in one place.

Multiprocess-safe: when `PROMETHEUS_MULTIPROC_DIR` is set *before this module is imported*
(`loan-default serve --workers N` does it), prometheus-client keeps each value in a per-process
mmap file and `render()` sums them, so counters are right whichever worker answered. Gauges
declare how workers combine (`livemax`: the worst live worker; a dead worker's value drops out).

HTTP metrics are recorded by the one API middleware (same names and labels as
prometheus-fastapi-instrumentator: `http_requests_total{handler,method,status}` and
`http_request_duration_seconds{handler,method}`), which costs a fraction of a separate
instrumentation middleware; /metrics and the health probes are left out.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

#: Sub-millisecond buckets: a single-row prediction takes tens of microseconds.
_FAST_BUCKETS: Final = (
    0.00002,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.1,
    0.5,
    2.5,
    10.0,
)
_HTTP_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

PREDICTIONS = Counter(
    "loan_predictions_total",
    "Prediction requests by type (single, batch) and outcome (success, error).",
    ["prediction_type", "status"],
)
PREDICTION_DURATION = Histogram(
    "loan_prediction_duration_seconds",
    "Model time per prediction call (features, model, calibration, risk band), by type.",
    ["prediction_type", "model_version"],
    buckets=_FAST_BUCKETS,
)
PREDICTION_RESULTS = Counter(
    "loan_prediction_result_total",
    "Predictions by decided class (`default` / `no_default`, at the model's own threshold).",
    ["result"],
)
DRIFT_PSI = Gauge(
    "loan_model_drift_psi",
    "Population Stability Index of a feature: recent traffic vs the model card's training data.",
    ["feature"],
    multiprocess_mode="livemax",
)
DRIFT_DETECTED = Gauge(
    "loan_model_drift_detected",
    "1 when any feature's PSI exceeds DRIFT_PSI_THRESHOLD, else 0.",
    multiprocess_mode="livemax",
)
DRIFT_SAMPLES = Gauge(
    "loan_model_drift_window_samples",
    "Samples in the drift window of a worker.",
    multiprocess_mode="livemax",
)
MODEL_INFO = Gauge(
    "loan_model_info",
    "1 for the model version being served (labels: model_version, model_alias).",
    ["model_version", "model_alias"],
    multiprocess_mode="livemax",
)


def _perf_gauge(name: str, doc: str, labels: tuple[str, ...] = ("model_version",)) -> Gauge:
    # `livemax`: every API worker computes the same figures from the same store; the scrape
    # shows one value per version, not one per process.
    return Gauge(name, doc, list(labels), multiprocess_mode="livemax")


#: Realized and estimated performance per model version over PERFORMANCE_WINDOW_DAYS
#: (`services.performance_monitor`); NaN where undefined (e.g. no defaults observed yet).
PERF_OUTCOMES = _perf_gauge(
    "loan_model_realized_outcomes",
    "Decisions in the window with an outcome recorded.",
)
PERF_PENDING = _perf_gauge(
    "loan_model_pending_outcomes",
    "Decisions in the window still waiting for their outcome.",
)
PERF_REALIZED_AUC = _perf_gauge(
    "loan_model_realized_auc",
    "ROC-AUC of the decisions with an outcome.",
)
PERF_REALIZED_BRIER = _perf_gauge(
    "loan_model_realized_brier",
    "Brier score of the decisions with an outcome.",
)
PERF_REALIZED_DEFAULT_RATE = _perf_gauge(
    "loan_model_realized_default_rate",
    "Observed default rate of the decisions with an outcome.",
)
PERF_EXPECTED_DEFAULT_RATE = _perf_gauge(
    "loan_model_expected_default_rate",
    "Mean predicted probability of the same decisions (what the model expected).",
)
PERF_OBSERVED_EXPECTED = _perf_gauge(
    "loan_model_observed_expected_ratio",
    "Observed / expected default rate (1 = calibrated).",
)
PERF_ESTIMATED_AUC = _perf_gauge(
    "loan_model_estimated_auc",
    "Expected ROC-AUC of the decisions without an outcome yet, from their calibrated "
    "probabilities (confidence-based estimation).",
)
PERF_ESTIMATED_DEFAULT_RATE = _perf_gauge(
    "loan_model_estimated_default_rate",
    "Expected default rate of the decisions without an outcome yet.",
)
PERF_ALERT = _perf_gauge(
    "loan_model_performance_alert",
    "1 while a performance alert holds for the version (`alert`: realized_auc_below_gate, "
    "estimated_auc_below_gate, observed_expected_out_of_band), thresholds from the settings.",
    ("model_version", "alert"),
)

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by route template, method and status.",
    ["handler", "method", "status"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template and method (server side, whole ASGI call).",
    ["handler", "method"],
    buckets=_HTTP_BUCKETS,
)

RATE_LIMIT_DEGRADED = Gauge(
    "loan_rate_limit_degraded",
    "1 while the shared rate-limit storage (Redis) is unavailable and this process limits on its "
    "own in memory, else 0.",
    multiprocess_mode="livemax",
)
RATE_LIMIT_STORAGE_ERRORS = Counter(
    "loan_rate_limit_storage_errors_total",
    "Failed or timed-out calls to the shared rate-limit storage.",
)

DECISIONS_RECORDED = Counter(
    "loan_decisions_recorded_total",
    "Decisions committed to the decision record, by source (predict, batch).",
    ["source"],
)
DECISIONS_LOST = Counter(
    "loan_decisions_lost_total",
    "Decisions answered without a record (DECISION_RECORDING=best_effort with the store down).",
    ["source"],
)
DECISION_STORE_ERRORS = Counter(
    "loan_decision_store_errors_total",
    "Failed writes to the decision store (each answered 503 under DECISION_RECORDING=required).",
)
CHALLENGER_SCORED = Counter(
    "loan_challenger_scored_total",
    "Decisions scored in shadow by the challenger model, by source (predict, batch).",
    ["source"],
)
CHALLENGER_ERRORS = Counter(
    "loan_challenger_errors_total",
    "Challenger failures, by stage: `load` (the alias's version refused or unreachable) or "
    "`score` (a group or chunk recorded without challenger fields); production is unaffected.",
    ["stage"],
)

#: Paths whose requests are not counted in the HTTP metrics (scrapes and probes).
UNMETERED_PATHS: Final = frozenset({"/metrics", "/healthz", "/readyz"})


class PredictionRecorder:
    """Pre-bound metric children for the single-row hot path (a `labels()` call costs ~1 us)."""

    def __init__(self) -> None:
        self.success = PREDICTIONS.labels("single", "success")
        self.error = PREDICTIONS.labels("single", "error")
        self.results = (
            PREDICTION_RESULTS.labels("no_default"),
            PREDICTION_RESULTS.labels("default"),
        )
        self._duration: dict[str, Histogram] = {}

    def observe(self, *, model_version: str, prediction: int, seconds: float) -> None:
        child = self._duration.get(model_version)
        if child is None:
            child = self._duration[model_version] = PREDICTION_DURATION.labels(
                "single", model_version
            )
        child.observe(seconds)
        self.success.inc()
        self.results[1 if prediction else 0].inc()


class HttpRecorder:
    """Caches the metric children per (handler, method, status)."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, str], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    def observe(self, *, handler: str, method: str, status: int, seconds: float) -> None:
        key = (handler, method, str(status))
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = HTTP_REQUESTS.labels(*key)
        counter.inc()
        hkey = (handler, method)
        hist = self._histograms.get(hkey)
        if hist is None:
            hist = self._histograms[hkey] = HTTP_DURATION.labels(*hkey)
        hist.observe(seconds)


def record_batch(*, model_version: str, rows: int, defaults: int, seconds: float, ok: bool) -> None:
    """Count one scored batch chunk (rows and decided classes); the API calls it for the chunk
    events the workers queue (`services.batch.scoring.record_events`)."""
    PREDICTIONS.labels("batch", "success" if ok else "error").inc(rows if ok else 1)
    if ok:
        PREDICTION_DURATION.labels("batch", model_version).observe(seconds)
        PREDICTION_RESULTS.labels("default").inc(defaults)
        PREDICTION_RESULTS.labels("no_default").inc(rows - defaults)


def set_model_info(*, version: str, alias: str | None, previous: str | None = None) -> None:
    """Serve-time model gauge; the previous version's series drops to 0 (kept for history)."""
    label_alias = alias or ""
    if previous is not None and previous != version:
        MODEL_INFO.labels(previous, label_alias).set(0)
    MODEL_INFO.labels(version, label_alias).set(1)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render() -> bytes:
    """The exposition text: all workers' values summed in multiprocess mode."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def mark_process_dead(pid: int) -> None:
    """Drop a finished worker's live gauges (its counters stay summed)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
