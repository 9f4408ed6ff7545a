"""Drift end to end: in-distribution traffic stays quiet, shifted traffic raises the flag."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import JSON_HEADERS, metric_value, running, store_env
from tests.conftest import DATA_FILE

pytestmark = pytest.mark.integration


def _training_rows(n: int) -> list[dict[str, float]]:
    with DATA_FILE.open() as fh:
        rows = list(csv.DictReader(fh))
    step = max(1, len(rows) // n)
    return [
        {
            "employed": int(float(r["Employed"])),
            "bank_balance": float(r["Bank Balance"]),
            "annual_salary": float(r["Annual Salary"]),
        }
        for r in rows[::step][:n]
    ]


def _flag(url: str) -> float | None:
    return metric_value(httpx.get(f"{url}/metrics").text, "loan_model_drift_detected")


def test_shifted_traffic_raises_drift(trained_store: Path, tmp_path: Path) -> None:
    env = store_env(
        trained_store,
        rate_limit_per_minute=1_000_000,
        drift_window_size=400,
        drift_min_samples=300,
        drift_interval_s=0.3,
        drift_sampling_rate=1,
    )
    with running(env, tmp_path) as server, httpx.Client(base_url=server.url) as client:
        for row in _training_rows(400):
            assert client.post("/api/v1/predict", json=row, headers=JSON_HEADERS).is_success
        time.sleep(1.0)
        report = client.get("/api/v1/monitoring/drift", headers=JSON_HEADERS).json()["data"]
        assert report["samples"] == 400
        assert report["window_fill"] == 1.0
        assert report["drift_detected"] is False, report
        assert all(v is not None and v < 0.15 for v in report["psi"].values()), report
        assert _flag(server.url) == 0

        # poorer applicants with large balances: shifts every feature but `employed`
        for i in range(400):
            row = {"employed": i % 3 != 0, "bank_balance": 25000.0 + i, "annual_salary": 15000.0}
            row["employed"] = int(row["employed"])
            assert client.post("/api/v1/predict", json=row, headers=JSON_HEADERS).is_success
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _flag(server.url) != 1:
            time.sleep(0.2)
        assert _flag(server.url) == 1
        text = httpx.get(f"{server.url}/metrics").text
        assert (metric_value(text, "loan_model_drift_psi", {"feature": "bank_balance"}) or 0) > 1
        report = client.get("/api/v1/monitoring/drift", headers=JSON_HEADERS).json()["data"]
        assert report["drift_detected"] is True
        assert {"bank_balance", "annual_salary", "saving_rate"} <= set(report["drifted_features"])
        time.sleep(1.0)  # several more computations: still one warning for this transition
        assert server.logs().count("input drift detected") == 1
