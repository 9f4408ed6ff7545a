"""Faults that must lose nothing: a SIGKILLed worker, a Redis restart, an API restart.

Real processes throughout: uvicorn API servers and Celery workers started through the CLI, the
shared Redis (DB 5, a private key prefix and queue) or a private redis-server with AOF.
"""

from __future__ import annotations

import csv
import io
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa

from loan_default.services.decisions import DecisionStore
from tests.conftest import free_port
from tests.worker.conftest import (
    CLI,
    HEADERS,
    PrivateRedis,
    Proc,
    base_url,
    batch_settings,
    csv_bytes,
    settings_env,
    wait_job,
    wait_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ITEM = {"employed": 1, "bank_balance": 8754.36, "annual_salary": 532339.56}


def _portfolio(n: int) -> bytes:
    return csv_bytes(
        [(f"id{i}", i % 2, 10.0 * i, 1000.0 + i) for i in range(n)],
        "loan_id,Employed,Bank Balance,Annual Salary",
    )


def _submit_portfolio(client: httpx.Client, n: int) -> str:
    """Upload an n-row portfolio CSV; the job id of the 202."""
    r = client.post(
        "/api/v1/predict/batch/file", files={"file": ("p.csv", _portfolio(n), "text/csv")}
    )
    assert r.status_code == 202, r.text
    return str(r.json()["data"]["job_id"])


def _csv_ids(client: httpx.Client, job_id: str) -> list[str]:
    text = client.get(f"/api/v1/predict/batch/{job_id}/results.csv").text
    return [r["loan_id"] for r in csv.DictReader(io.StringIO(text))]


def test_sigkilled_worker_mid_job_every_row_exactly_once(
    trained_store: Path, tmp_path: Path, procs: Callable[..., Proc]
) -> None:
    settings = batch_settings(
        trained_store,
        tmp_path,
        batch_chunk_size=100,
        celery_visibility_timeout_s=4,
        batch_task_time_limit_s=3,
        batch_stall_s=3,  # a message lost as the worker took it (see the test below)
        decision_store_url=f"sqlite:///{tmp_path / 'decisions.db'}",
    )
    api = procs("api", settings)
    first = procs("worker", settings)
    n = 30_000
    with httpx.Client(base_url=base_url(api), headers=HEADERS, timeout=30) as client:
        job = _submit_portfolio(client, n)
        deadline = time.monotonic() + 60
        progress = 0
        while time.monotonic() < deadline:
            progress = client.get(f"/api/v1/predict/batch/{job}").json()["data"]["progress"]
            if progress >= 10:
                break
            time.sleep(0.01)
        first.kill(signal.SIGKILL)
        stalled = client.get(f"/api/v1/predict/batch/{job}").json()["data"]
        assert stalled["status"] == "PROGRESS", "the kill must land mid-job"
        procs("worker", settings)
        done = wait_job(client, job, timeout=90)
        assert done["status"] == "SUCCESS"
        assert done["completed"] == done["total"] == n
        ids = _csv_ids(client, job)
    assert ids == [f"id{i}" for i in range(n)]
    # the decision record: every row once, none twice, though a chunk was scored again
    with DecisionStore.from_url(settings.decision_store_url) as store, store.engine.connect() as c:
        rows, distinct, numbers = c.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT decision_id), count(DISTINCT row) "
                "FROM decisions WHERE job_id = :job"
            ),
            {"job": job},
        ).one()
    assert rows == distinct == numbers == n


def test_a_chunk_message_lost_by_the_broker_is_sent_again(
    trained_store: Path, tmp_path: Path, procs: Callable[..., Proc]
) -> None:
    """kombu pops a message (BRPOP) before it records it as unacknowledged: a worker killed in
    between loses it for good, and the visibility timeout cannot bring it back. The workers'
    stall sweep sends the chunk again once the job idles with an empty queue."""
    settings = batch_settings(
        trained_store,
        tmp_path,
        batch_chunk_size=100,
        batch_stall_s=2,
        decision_store_url=f"sqlite:///{tmp_path / 'decisions.db'}",
    )
    api = procs("api", settings)
    n = 1_000
    with httpx.Client(base_url=base_url(api), headers=HEADERS, timeout=30) as client:
        job = _submit_portfolio(client, n)  # no worker yet: the ten chunk messages wait
        broker = redis.Redis.from_url(settings.celery_broker_url)
        try:
            assert broker.llen(settings.celery_queue) == 10
            assert broker.rpop(settings.celery_queue) is not None  # taken, never recorded
        finally:
            broker.close()
        procs("worker", settings)
        done = wait_job(client, job, timeout=60)
        assert done["status"] == "SUCCESS"
        assert done["completed"] == done["total"] == n
        assert _csv_ids(client, job) == [f"id{i}" for i in range(n)]
    with DecisionStore.from_url(settings.decision_store_url) as store, store.engine.connect() as c:
        rows, distinct = c.execute(
            sa.text("SELECT count(*), count(DISTINCT row) FROM decisions WHERE job_id = :job"),
            {"job": job},
        ).one()
    assert rows == distinct == n


def test_redis_restart_with_queued_jobs(
    trained_store: Path,
    tmp_path: Path,
    procs: Callable[..., Proc],
    private_redis: PrivateRedis,
) -> None:
    settings = batch_settings(trained_store, tmp_path, celery_broker_url=private_redis.url)
    api = procs("api", settings)
    with httpx.Client(base_url=base_url(api), headers=HEADERS, timeout=30) as client:
        jobs = []
        for k in range(3):
            r = client.post("/api/v1/predict/batch", json={"predictions": [ITEM] * (k + 1)})
            assert r.status_code == 202, r.text
            jobs.append(r.json()["data"]["job_id"])
        private_redis.stop()  # no worker yet: the three jobs are queued
        r = client.post("/api/v1/predict/batch", json={"predictions": [ITEM]})
        assert r.status_code == 503, r.text
        assert r.json()["success"] is False
        assert client.get(f"/api/v1/predict/batch/{jobs[0]}").status_code == 503
        assert client.post("/api/v1/predict", json=ITEM).status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["data"]["broker"]["status"] == "unavailable"

        private_redis.start()  # same port and AOF directory
        procs("worker", settings)
        for k, job in enumerate(jobs):
            done = wait_job(client, job, timeout=60)
            assert done["status"] == "SUCCESS"
            assert done["completed"] == k + 1
        assert client.get("/readyz").json()["data"]["broker"]["status"] == "ok"
        r = client.post("/api/v1/predict/batch", json={"predictions": [ITEM]})
        assert r.status_code == 202, r.text
        assert wait_job(client, r.json()["data"]["job_id"])["status"] == "SUCCESS"


def test_api_restarted_while_jobs_run(
    trained_store: Path, tmp_path: Path, procs: Callable[..., Proc]
) -> None:
    settings = batch_settings(trained_store, tmp_path, batch_chunk_size=100)
    api = procs("api", settings)
    procs("worker", settings)
    n = 20_000
    with httpx.Client(base_url=base_url(api), headers=HEADERS, timeout=30) as client:
        job = _submit_portfolio(client, n)
    api.kill(signal.SIGKILL)
    api2 = procs("api", settings)
    with httpx.Client(base_url=base_url(api2), headers=HEADERS, timeout=30) as client:
        assert client.get(f"/api/v1/predict/batch/{job}").status_code == 200
        done = wait_job(client, job, timeout=60)
        assert done["status"] == "SUCCESS"
        assert done["completed"] == n
        assert _csv_ids(client, job) == [f"id{i}" for i in range(n)]


def test_run_without_a_broker_starts_a_private_redis_and_keeps_jobs_across_restarts(
    trained_store: Path, tmp_path: Path
) -> None:
    """`loan-default run` (`make run`) with no CELERY_BROKER_URL: it starts its own redis-server
    (AOF under RUN_REDIS_DIR), the API and a worker on it; a 1000-row job succeeds, and after a
    restart the finished job's results are still there."""
    settings = batch_settings(trained_store, tmp_path, celery_broker_url="", batch_store_url="")
    env = settings_env(settings)
    env.pop("CELERY_BROKER_URL", None)
    env["RUN_REDIS_DIR"] = str(tmp_path / "redis")
    port = free_port()

    def start(n: int) -> Proc:
        proc = Proc(
            [*CLI, "run", "--port", str(port), "--concurrency", "1"],
            env=env,
            log=tmp_path / f"run-{n}.log",
            cwd=tmp_path,
        ).start()
        wait_ready(f"http://127.0.0.1:{port}", proc)
        return proc

    first = start(0)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=30) as c:
            broker = c.get("/readyz").json()["data"]["broker"]
            assert (broker["type"], broker["status"]) == ("redis", "ok")
            started = time.perf_counter()
            job = c.post("/api/v1/predict/batch", json={"predictions": [ITEM] * 1000})
            assert job.status_code == 202, job.text
            job_id = job.json()["data"]["job_id"]
            assert wait_job(c, job_id)["status"] == "SUCCESS"
            print(f"\n1000-row job on `loan-default run`: {time.perf_counter() - started:.3f} s")
    finally:
        first.stop()
    assert "private redis-server" in first.text()
    assert (tmp_path / "redis" / "appendonlydir").exists() or list(
        (tmp_path / "redis").glob("*.aof")
    )
    second = start(1)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=30) as c:
            again = c.get(f"/api/v1/predict/batch/{job_id}", params={"limit": 5})
            assert again.status_code == 200, again.text
            assert again.json()["data"]["status"] == "SUCCESS"
            assert len(again.json()["data"]["results"]) == 5
    finally:
        second.stop()


def test_status_says_chunks_await_redelivery_after_a_whole_worker_sigkill(
    trained_store: Path, tmp_path: Path, procs: Callable[..., Proc]
) -> None:
    """Item 12: a SIGKILLed worker's begun chunk waits out CELERY_VISIBILITY_TIMEOUT_S; the job
    status says so (how many, and when the broker hands them out again) instead of sitting at
    some progress with no sign, and the field goes once the chunks are scored."""
    visibility = 15
    settings = batch_settings(
        trained_store,
        tmp_path,
        batch_chunk_size=100,
        celery_visibility_timeout_s=visibility,
        batch_task_time_limit_s=3,
    )
    api = procs("api", settings)
    first = procs("worker", settings)
    store = redis.Redis.from_url(settings.celery_broker_url)
    with httpx.Client(base_url=base_url(api), headers=HEADERS, timeout=30) as client:
        job = _submit_portfolio(client, 30_000)
        prefix = settings.batch_key_prefix + job
        # Freeze the worker until it is caught between beginning a chunk and storing it (a
        # bounded number of tries), then kill it there: the chunk it held is lost with it.
        for _ in range(500):
            first.popen.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            begun = set(store.hkeys(prefix + ":run")) - set(store.hkeys(prefix + ":done"))
            if begun:
                break
            first.popen.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            time.sleep(0.003)
        assert begun, "never caught the worker mid-chunk"
        killed_at = time.time()
        first.kill(signal.SIGKILL)
        deadline = time.monotonic() + 20
        data: dict[str, object] = {}
        while time.monotonic() < deadline:
            data = client.get(f"/api/v1/predict/batch/{job}").json()["data"]
            if "awaiting_redelivery" in data:
                break
            time.sleep(0.2)
        waiting = data.get("awaiting_redelivery")
        assert isinstance(waiting, dict), data
        assert data["status"] == "PROGRESS"
        assert waiting["chunks"] == len(begun)
        expected_at = datetime.fromisoformat(str(waiting["expected_at"])).timestamp()
        assert killed_at < expected_at <= killed_at + visibility + 1
        assert "CELERY_VISIBILITY_TIMEOUT_S" in waiting["reason"]
        procs("worker", settings)
        done = wait_job(client, job, timeout=90)
        assert done["status"] == "SUCCESS"
        assert "awaiting_redelivery" not in done
        assert done["completed"] == 30_000
