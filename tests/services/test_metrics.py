"""Metric helpers: names, labels, and what one recorded prediction adds."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from loan_default.services import metrics

pytestmark = pytest.mark.unit


def _value(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_prediction_recorder_counts() -> None:
    before = _value("loan_predictions_total", {"prediction_type": "single", "status": "success"})
    before_default = _value("loan_prediction_result_total", {"result": "default"})
    rec = metrics.PredictionRecorder()
    rec.observe(model_version="t1", prediction=1, seconds=0.00003)
    rec.observe(model_version="t1", prediction=0, seconds=0.00003)
    after = _value("loan_predictions_total", {"prediction_type": "single", "status": "success"})
    assert after - before == 2
    assert _value("loan_prediction_result_total", {"result": "default"}) - before_default == 1
    assert (
        _value(
            "loan_prediction_duration_seconds_count",
            {"prediction_type": "single", "model_version": "t1"},
        )
        == 2
    )


def test_record_batch_and_model_info() -> None:
    metrics.record_batch(model_version="t2", rows=10, defaults=3, seconds=0.01, ok=True)
    assert _value("loan_predictions_total", {"prediction_type": "batch", "status": "success"}) >= 10
    metrics.set_model_info(version="t3", alias="production")
    metrics.set_model_info(version="t4", alias="production", previous="t3")
    assert _value("loan_model_info", {"model_version": "t3", "model_alias": "production"}) == 0
    assert _value("loan_model_info", {"model_version": "t4", "model_alias": "production"}) == 1
    text = metrics.render().decode()
    assert "loan_model_drift_detected" in text
    assert "http_requests_total" in text
