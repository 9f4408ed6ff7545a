"""Batch rows in the prediction metrics, whichever worker process scored them (real processes).

Two Celery worker processes score one job's chunks; the API's `/metrics` counts every row once,
in `loan_predictions_total{prediction_type="batch"}`, the result counter and the duration
histogram, and a second scrape adds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from tests.api.conftest import metric_value
from tests.conftest import redis_url
from tests.worker.conftest import HEADERS, Proc, base_url, batch_settings, wait_job

pytestmark = pytest.mark.integration

ROWS, CHUNK = 4000, 100


def test_batch_rows_are_counted_once_whichever_worker_scored_them(
    trained_store: Path, tmp_path: Path, procs: Callable[..., Proc]
) -> None:
    settings = batch_settings(trained_store, tmp_path, batch_chunk_size=CHUNK, batch_max_rows=ROWS)
    api = procs("api", settings)
    workers = [procs("worker", settings, pool="solo") for _ in range(2)]
    items = [
        {"employed": i % 2, "bank_balance": 500.0 * (i % 60), "annual_salary": 20_000.0 + i}
        for i in range(ROWS)
    ]
    with httpx.Client(base_url=base_url(api), headers=HEADERS, timeout=60) as client:
        before = client.get("/metrics").text
        assert (
            metric_value(before, "loan_predictions_total", {"prediction_type": "batch"}) or 0
        ) == 0
        job = client.post("/api/v1/predict/batch", json={"predictions": items})
        assert job.status_code == 202, job.text
        job_id = job.json()["data"]["job_id"]
        assert wait_job(client, job_id)["status"] == "SUCCESS"
        defaults = 0
        for offset in range(0, ROWS, 500):
            params = {"offset": offset, "limit": 500}
            page = client.get(f"/api/v1/predict/batch/{job_id}", params=params)
            defaults += sum(r["prediction"] for r in page.json()["data"]["results"])
        first = client.get("/metrics").text
        second = client.get("/metrics").text
    # both worker processes scored chunks of this job
    run_map = redis.Redis.from_url(redis_url(5)).hgetall(f"{settings.batch_key_prefix}{job_id}:run")
    scorers = {v.decode().split(":", 1)[1] for v in run_map.values()}
    print(f"\nchunks per worker: {len(run_map)} chunks by {len(scorers)} workers")
    assert len(scorers) == len(workers), scorers
    for text in (first, second):  # counted once: the second scrape finds nothing new
        batch = {"prediction_type": "batch", "status": "success"}
        assert metric_value(text, "loan_predictions_total", batch) == ROWS
        assert metric_value(text, "loan_prediction_result_total", {"result": "default"}) == defaults
        assert (
            metric_value(text, "loan_prediction_result_total", {"result": "no_default"})
            == ROWS - defaults
        )
        assert (
            metric_value(
                text, "loan_prediction_duration_seconds_count", {"prediction_type": "batch"}
            )
            == ROWS // CHUNK
        )
