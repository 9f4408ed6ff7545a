"""Batch rows reach the drift window: once per job, after the 202 (in process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loan_default.api.app import API_PREFIX, create_app
from loan_default.services.model import ModelService
from tests.api.conftest import JSON_HEADERS, asgi_requests
from tests.conftest import TEST_API_KEY, RecordingDispatcher, make_settings, queued_batch

pytestmark = pytest.mark.integration

BATCH = f"{API_PREFIX}/predict/batch"
DRIFT = f"{API_PREFIX}/monitoring/drift"


def test_each_new_job_feeds_the_drift_window_once(trained_store: Path, bundle: Any) -> None:
    settings = make_settings(
        trained_store,
        drift_batch_sampling_rate=1,
        drift_window_size=10_000,
        rate_limit_per_minute=1_000_000,
        **queued_batch(),
    )
    app = create_app(
        settings,
        model_service=ModelService(settings=settings, bundle=bundle),
        dispatcher=RecordingDispatcher(),
    )
    items = [
        {"employed": i % 2, "bank_balance": 10.0 * i, "annual_salary": 900.0} for i in range(40)
    ]
    submit = {"json": {"predictions": items}, "headers": {**JSON_HEADERS, "Idempotency-Key": "k"}}
    csv = "employed,bank_balance,annual_salary\n" + "1,5.5,1000\n" * 10
    upload = {"files": {"file": ("p.csv", csv, "text/csv")}, "headers": {"X-API-Key": TEST_API_KEY}}
    read = ("GET", DRIFT, {"headers": JSON_HEADERS})
    first, seen, replay, after_replay, file, after_file = asgi_requests(
        app,
        [
            ("POST", BATCH, submit),
            read,
            ("POST", BATCH, submit),
            read,
            ("POST", f"{BATCH}/file", upload),
            read,
        ],
    )
    assert first.status_code == 202, first.text
    assert seen.json()["data"]["samples"] == 40
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert after_replay.json()["data"]["samples"] == 40  # the same job is not sampled twice
    assert file.status_code == 202, file.text
    assert after_file.json()["data"]["samples"] == 50
