"""The soak test's load, for locust in headless mode (tests/hardening/test_soak.py runs it).

Two kinds of client against one API process:
- `PredictUser`: single predictions at a bounded pace (SOAK_PREDICT_PAUSE_S between requests);
- `BatchUser` (exactly one): a SOAK_JOB_ROWS-row batch job with a fresh Idempotency-Key every
  SOAK_JOB_EVERY_S, then a status poll of the latest job, like a client would.

Every response's status is counted, and at the end the counts, the ids of the accepted jobs and
any error text are written as JSON to SOAK_OUT, for the test to check (no 5xx, no job lost).
Run by hand: `SOAK_API_KEY=... SOAK_OUT=/tmp/soak.json locust -f tests/hardening/locustfile.py
--headless --host http://127.0.0.1:8005 -u 7 -r 7 -t 2m`.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections import Counter
from typing import Any

from locust import HttpUser, constant, events, task
from locust.env import Environment

API_KEY = os.environ["SOAK_API_KEY"]
OUT = os.environ["SOAK_OUT"]
JOB_ROWS = int(os.environ.get("SOAK_JOB_ROWS", "200"))
JOB_EVERY_S = float(os.environ.get("SOAK_JOB_EVERY_S", "0.5"))
PREDICT_PAUSE_S = float(os.environ.get("SOAK_PREDICT_PAUSE_S", "0.02"))
HEADERS = {"X-API-Key": API_KEY}

statuses: Counter[int] = Counter()
jobs: list[str] = []
errors: list[str] = []


def applicant(rng: random.Random) -> dict[str, Any]:
    return {
        "employed": rng.randint(0, 1),
        "bank_balance": rng.uniform(0, 30_000),
        "annual_salary": rng.uniform(5_000, 700_000),
    }


def _record(response: Any, what: str, expected: int) -> None:
    """Count the status; anything but the expected one is a locust failure and kept as text."""
    code = int(response.status_code or 0)  # 0: no response at all (connection error)
    statuses[code] += 1
    if code != expected:
        errors.append(f"{what} -> {code}: {(response.text or '')[:200]}")
        response.failure(f"status {code}")
    else:
        response.success()


class PredictUser(HttpUser):
    wait_time = constant(PREDICT_PAUSE_S)

    def on_start(self) -> None:
        self.rng = random.Random(id(self))

    @task
    def predict(self) -> None:
        with self.client.post(
            "/api/v1/predict", json=applicant(self.rng), headers=HEADERS, catch_response=True
        ) as r:
            _record(r, "predict", 200)


class BatchUser(HttpUser):
    fixed_count = 1
    wait_time = constant(JOB_EVERY_S)

    def on_start(self) -> None:
        self.rng = random.Random(999)

    @task
    def submit_and_poll(self) -> None:
        body = {"predictions": [applicant(self.rng) for _ in range(JOB_ROWS)]}
        with self.client.post(
            "/api/v1/predict/batch",
            json=body,
            headers={**HEADERS, "Idempotency-Key": uuid.uuid4().hex},
            catch_response=True,
        ) as r:
            _record(r, "batch submit", 202)
            if r.status_code == 202:
                jobs.append(r.json()["data"]["job_id"])
        if jobs:
            with self.client.get(
                f"/api/v1/predict/batch/{jobs[-1]}",
                headers=HEADERS,
                name="/api/v1/predict/batch/[job_id]",
                catch_response=True,
            ) as r:
                _record(r, "batch status", 200)


@events.quitting.add_listener
def _dump(environment: Environment, **_: Any) -> None:
    with open(OUT, "w") as fh:
        json.dump({"statuses": statuses, "jobs": jobs, "errors": errors}, fh)
