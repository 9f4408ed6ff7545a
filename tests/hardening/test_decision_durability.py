"""Durable before answered, at the process boundary: SIGKILL the API under load; every decision id
that came back in a 200 is in the store afterwards."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from loan_default.services.decisions import DecisionStore
from tests.api.conftest import GOOD, JSON_HEADERS, Server, store_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADVERSE = {"employed": 1, "bank_balance": 26_000.0, "annual_salary": 30_000.0}


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_sigkilled_api_loses_no_answered_decision(
    trained_store: Path, tmp_path: Path, synchronous: str
) -> None:
    db = tmp_path / "decisions.db"
    env = store_env(
        trained_store,
        decision_store_url=f"sqlite:///{db}",
        decision_sqlite_synchronous=synchronous,
        rate_limit_per_minute=1_000_000_000,
    )
    server = Server(env, tmp_path / "srv")
    answered: list[str] = []
    stop = threading.Event()

    def load(body: dict[str, float]) -> None:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while not stop.is_set():
                try:
                    r = client.post("/api/v1/predict", json=body, headers=JSON_HEADERS)
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    answered.append(r.json()["data"]["decision_id"])

    try:
        server.wait()
        threads = [
            threading.Thread(target=load, args=(GOOD if i % 2 else ADVERSE,)) for i in range(8)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(answered) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(server.proc.pid, signal.SIGKILL)  # mid-flight: requests are in every stage
        server.proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=10)
    finally:
        stop.set()
        server.stop()
    assert len(answered) >= 300, server.logs()[-2000:]
    with DecisionStore.from_url(f"sqlite:///{db}") as store:
        missing = [d for d in answered if store.get(d) is None]
    assert missing == [], f"{len(missing)} of {len(answered)} answered decisions not recorded"
