"""Soak: ≥ 2 minutes of mixed load through the Redis rate-limit storage and the Redis broker.

One API process and one Celery worker (solo pool), both real; single predictions at a bounded
rate from several connections, batch jobs submitted continuously and polled to the end. Checks:
no 5xx, every job SUCCESS with every row, resident memory of both processes within 10 % between
minute 1 and the end. SOAK_SECONDS (default 120) sets the duration.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import redis_url
from tests.worker.conftest import HEADERS, Proc, base_url, batch_settings, procs  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
PREDICT_CONNECTIONS = 6
PREDICT_PAUSE_S = 0.02  # per connection: bounded, ~250 req/s in all, not a saturation test
JOB_ROWS = 200
JOB_EVERY_S = 0.5


def rss_kb(pid: int) -> int:
    """Resident memory of a process and its descendants, in kB (from /proc)."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        total += rss_kb(int(child))
    return total


def _rows(n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    return [
        {
            "employed": int(rng.integers(0, 2)),
            "bank_balance": float(rng.uniform(0, 30_000)),
            "annual_salary": float(rng.uniform(5_000, 700_000)),
        }
        for _ in range(n)
    ]


async def _load(url: str, duration: float, sample: Callable[[float], None]) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    jobs: list[str] = []
    errors: list[str] = []
    stop_at = time.monotonic() + duration
    limits = httpx.Limits(max_connections=PREDICT_CONNECTIONS + 4)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def predictor(seed: int) -> None:
            rng = np.random.default_rng(seed)
            while time.monotonic() < stop_at:
                body = _rows(1, rng)[0]
                r = await client.post("/api/v1/predict", json=body, headers=HEADERS)
                statuses[r.status_code] += 1
                if r.status_code >= 500:
                    errors.append(r.text[:200])
                await asyncio.sleep(PREDICT_PAUSE_S)

        async def submitter() -> None:
            rng = np.random.default_rng(999)
            while time.monotonic() < stop_at:
                r = await client.post(
                    "/api/v1/predict/batch",
                    json={"predictions": _rows(JOB_ROWS, rng)},
                    headers={**HEADERS, "Idempotency-Key": uuid.uuid4().hex},
                )
                statuses[r.status_code] += 1
                if r.status_code == 202:
                    jobs.append(r.json()["data"]["job_id"])
                else:
                    errors.append(f"submit {r.status_code}: {r.text[:200]}")
                # a status poll of a recent job now and then, like a client would
                if jobs:
                    p = await client.get(f"/api/v1/predict/batch/{jobs[-1]}", headers=HEADERS)
                    statuses[p.status_code] += 1
                await asyncio.sleep(JOB_EVERY_S)

        async def sampler() -> None:
            start = time.monotonic()
            while time.monotonic() < stop_at:
                await asyncio.sleep(1.0)
                sample(time.monotonic() - start)

        await asyncio.gather(
            *(predictor(i) for i in range(PREDICT_CONNECTIONS)), submitter(), sampler()
        )
    return {"statuses": statuses, "jobs": jobs, "errors": errors}


def test_soak_mixed_load(
    trained_store: Path,
    tmp_path: Path,
    procs: Callable[..., Proc],  # noqa: F811
) -> None:
    prefix = f"soak-{uuid.uuid4().hex[:8]}"
    settings = batch_settings(
        trained_store,
        tmp_path,
        celery_broker_url=redis_url(7),
        rate_limit_storage_uri=redis_url(8),
        rate_limit_key_prefix=prefix,
        rate_limit_per_minute=10_000_000,  # counted in Redis on every request, never reached
        drift_interval_s=1.0,
    )
    worker = procs("worker", settings)
    api = procs("api", settings)
    url = base_url(api)
    with httpx.Client(base_url=url, timeout=10) as client:  # warm both paths once
        assert (
            client.post(
                "/api/v1/predict", json=_rows(1, np.random.default_rng(0))[0], headers=HEADERS
            ).status_code
            == 200
        )

    memory: dict[str, list[tuple[float, int]]] = {"api": [], "worker": []}

    def sample(elapsed: float) -> None:
        memory["api"].append((elapsed, rss_kb(api.pid)))
        memory["worker"].append((elapsed, rss_kb(worker.pid)))

    t0 = time.monotonic()
    result = asyncio.run(_load(url, SOAK_SECONDS, sample))
    load_s = time.monotonic() - t0

    # every job submitted completes with every row
    jobs: list[str] = result["jobs"]
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=url, timeout=10, headers=HEADERS) as client:
        while len(done) < len(jobs) and time.monotonic() < deadline:
            for job in jobs:
                if job in done:
                    continue
                r = client.get(f"/api/v1/predict/batch/{job}", params={"limit": 1})
                assert r.status_code == 200, r.text
                data = r.json()["data"]
                if data["status"] in {"SUCCESS", "FAILURE"}:
                    done[job] = data
            time.sleep(0.2)
    statuses: Counter[int] = result["statuses"]
    requests = sum(statuses.values())

    def at(series: list[tuple[float, int]], t: float) -> int:
        return min(series, key=lambda s: abs(s[0] - t))[1]

    minute = min(60.0, SOAK_SECONDS / 2)
    api_1, api_end = at(memory["api"], minute), memory["api"][-1][1]
    wrk_1, wrk_end = at(memory["worker"], minute), memory["worker"][-1][1]
    print(
        f"\nsoak: {load_s:.0f} s, {requests} requests ({dict(sorted(statuses.items()))}), "
        f"{requests / load_s:.0f} req/s; {len(jobs)} jobs x {JOB_ROWS} rows, "
        f"{sum(d['status'] == 'SUCCESS' for d in done.values())} SUCCESS\n"
        f"  API RSS: start {memory['api'][0][1] / 1024:.1f} MB, minute 1 {api_1 / 1024:.1f} MB, "
        f"end {api_end / 1024:.1f} MB ({(api_end - api_1) / api_1:+.1%})\n"
        f"  worker RSS: start {memory['worker'][0][1] / 1024:.1f} MB, minute 1 "
        f"{wrk_1 / 1024:.1f} MB, end {wrk_end / 1024:.1f} MB ({(wrk_end - wrk_1) / wrk_1:+.1%})"
    )
    assert not result["errors"], result["errors"][:5]
    assert not [s for s in statuses if s >= 500], statuses
    assert set(statuses) <= {200, 202}, statuses
    assert statuses[200] > 20 * SOAK_SECONDS, "the load was bounded, but not idle"
    assert len(jobs) >= SOAK_SECONDS / JOB_EVERY_S / 2
    assert len(done) == len(jobs), f"{len(jobs) - len(done)} jobs never finished"
    assert all(d["status"] == "SUCCESS" for d in done.values())
    assert all(d["total"] == d["completed"] == JOB_ROWS for d in done.values())
    assert abs(api_end - api_1) / api_1 <= 0.10
    assert abs(wrk_end - wrk_1) / wrk_1 <= 0.10
    assert "Traceback" not in api.text()
