"""Soak: >= 2 minutes of mixed load through the Redis rate-limit storage and the Redis broker.

One API process and one Celery worker (solo pool), both real; the load is locust, headless
(tests/hardening/locustfile.py): single predictions at a bounded rate from several users, a
batch job submitted every half second and polled. Checks: no 5xx (no status but the expected
one), every job SUCCESS with every row, resident memory of both processes within 10 % between
minute 1 and the end. SOAK_SECONDS (default 120) sets the duration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_API_KEY, redis_url
from tests.worker.conftest import HEADERS, Proc, base_url, batch_settings, procs  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
PREDICT_USERS = 6
PREDICT_PAUSE_S = 0.02  # per user: bounded, ~250 req/s in all, not a saturation test
JOB_ROWS = 200
JOB_EVERY_S = 0.5
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
APPLICANT = {"employed": 1, "bank_balance": 8754.36, "annual_salary": 532339.56}


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


def run_locust(
    url: str, duration: float, out: Path, sample: Callable[[float], None]
) -> tuple[dict[str, Any], str]:
    """Run the locustfile headless for `duration` s, calling `sample` about once a second."""
    env = {
        **os.environ,
        "SOAK_API_KEY": TEST_API_KEY,
        "SOAK_OUT": str(out),
        "SOAK_JOB_ROWS": str(JOB_ROWS),
        "SOAK_JOB_EVERY_S": str(JOB_EVERY_S),
        "SOAK_PREDICT_PAUSE_S": str(PREDICT_PAUSE_S),
    }
    cmd = [
        str(Path(sys.executable).with_name("locust")),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "--users",
        str(PREDICT_USERS + 1),
        "--spawn-rate",
        str(PREDICT_USERS + 1),
        "--run-time",
        f"{int(duration)}s",
        "--stop-timeout",
        "10",
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    log = out.with_suffix(".log")
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        start = time.monotonic()
        try:
            while proc.poll() is None:
                if time.monotonic() - start > duration + 60:
                    raise AssertionError(f"locust still running after {duration + 60:.0f} s")
                time.sleep(1.0)
                sample(time.monotonic() - start)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text(errors="replace")
    assert out.exists(), f"locust wrote no results (exit {proc.returncode}):\n{text[-3000:]}"
    return json.loads(out.read_text()), text


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
        assert client.post("/api/v1/predict", json=APPLICANT, headers=HEADERS).status_code == 200

    memory: dict[str, list[tuple[float, int]]] = {"api": [], "worker": []}

    def sample(elapsed: float) -> None:
        memory["api"].append((elapsed, rss_kb(api.pid)))
        memory["worker"].append((elapsed, rss_kb(worker.pid)))

    t0 = time.monotonic()
    result, summary = run_locust(url, SOAK_SECONDS, tmp_path / "locust.json", sample)
    load_s = time.monotonic() - t0
    print(f"\nlocust summary:\n{summary.strip()}")

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
    statuses: Counter[int] = Counter({int(k): v for k, v in result["statuses"].items()})
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
