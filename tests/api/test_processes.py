"""Process-level behaviour: several workers, MLflow down at start, production key refusal."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from loan_default.core.config import EXAMPLE_API_KEY
from tests.api.conftest import CLI, GOOD, JSON_HEADERS, Server, metric_value, running, store_env
from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_two_workers_sum_counters(trained_store: Path, tmp_path: Path) -> None:
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    (prom_dir / "counter_99999.db").write_bytes(b"stale")  # a previous run's file: wiped
    env = store_env(
        trained_store, rate_limit_per_minute=1_000_000, prometheus_multiproc_dir=prom_dir
    )
    with running(env, tmp_path / "srv", workers=2) as server:
        # both workers must have loaded the model before counting
        ok, deadline = 0, time.monotonic() + 60
        while ok < 20 and time.monotonic() < deadline:
            ok = ok + 1 if httpx.get(f"{server.url}/readyz").status_code == 200 else 0
        assert ok == 20, "both workers should be ready"
        n = 120

        def one(_: int) -> int:
            # a new connection per request, so both workers take some
            return httpx.post(
                f"{server.url}/api/v1/predict", json=GOOD, headers=JSON_HEADERS
            ).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(one, range(n))) == {200}
        pids = {p.stem.rsplit("_", 1)[1] for p in prom_dir.glob("counter_*.db")}
        assert len(pids) == 2, f"expected both workers to write counters, got {pids}"
        for _ in range(6):  # every scrape, whichever worker answers, sees the sum
            text = httpx.get(f"{server.url}/metrics").text
            assert metric_value(
                text, "loan_predictions_total", {"prediction_type": "single", "status": "success"}
            ) == float(n)
            assert metric_value(
                text, "http_requests_total", {"handler": "/api/v1/predict", "status": "200"}
            ) == float(n)
            assert metric_value(text, "loan_prediction_result_total") == float(n)
    assert "stale" not in "".join(p.name for p in prom_dir.iterdir())


def test_mlflow_unreachable_at_start(tmp_path: Path, trained_store: Path) -> None:
    env = store_env(
        trained_store,
        mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}",
        mlflow_http_request_max_retries=0,
        mlflow_http_request_timeout=2,
        model_load_retry_max_s=1,
    )
    server = Server(env, tmp_path)
    try:
        server.wait("/healthz")
        for _ in range(3):
            r = httpx.get(f"{server.url}/readyz")
            assert r.status_code == 503
            body = r.json()
            assert body["success"] is False
            assert body["data"]["status"] == "not_ready"
            assert body["data"]["model_loaded"] is False
            time.sleep(0.7)
        # a reason code, never the exception text (readyz is anonymous); the detail is logged
        assert body["data"]["reason"] == "registry_unreachable"
        assert "127.0.0.1" not in r.text
        assert "model registry unreachable (" in server.logs()
        r = httpx.post(f"{server.url}/api/v1/predict", json=GOOD, headers=JSON_HEADERS)
        assert r.status_code == 503
        assert r.json()["error"] == "model_not_ready"
        r = httpx.get(f"{server.url}/api/v1/model/info", headers=JSON_HEADERS)
        assert r.status_code == 503
        assert server.proc.poll() is None, "the server keeps running and retrying"
        assert "registry unreachable" in server.logs()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "keys",
    [
        {"API_KEYS": EXAMPLE_API_KEY},
        {"API_KEYS": "a-real-key-0123456789", "API_KEY": EXAMPLE_API_KEY},
        {"API_KEYS": f"a-real-key-0123456789:score,{EXAMPLE_API_KEY}:score+audit"},
    ],
)
def test_production_refuses_example_key(
    trained_store: Path, tmp_path: Path, keys: dict[str, str]
) -> None:
    env = {**store_env(trained_store, environment="production"), **keys}
    done = subprocess.run(
        [CLI, "serve", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "example API key" in done.stderr
    assert EXAMPLE_API_KEY not in done.stderr.replace("the example API key", "")
