"""Hot reload: the alias moves while a client hammers /predict; nothing fails or mixes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from loan_default.registry.client import Registry
from tests.api.conftest import GOOD, JSON_HEADERS, running, store_env
from tests.conftest import make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _register_copy_of_v1(registry: Registry) -> str:
    """A new registered version with v1's artifacts (what a retrain would register)."""
    v1 = registry.client.get_model_version(registry.name, "1")
    mv = registry.client.create_model_version(registry.name, v1.source, run_id=v1.run_id)
    return str(mv.version)


def test_promotion_during_load(fresh_store: Path, tmp_path: Path) -> None:
    env = store_env(fresh_store, rate_limit_per_minute=1_000_000, model_reload_interval_s=0.5)
    with running(env, tmp_path) as server:
        versions: Counter[str] = Counter()
        failures: list[str] = []
        sequence: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(base_url=server.url, timeout=10) as client:
                while not stop.is_set():
                    r = client.post("/api/v1/predict", json=GOOD, headers=JSON_HEADERS)
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                        continue
                    version = r.json()["data"]["model_version"]
                    versions[version] += 1
                    sequence.append(version)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        registry = Registry(make_settings(fresh_store))
        v2 = _register_copy_of_v1(registry)
        registry.promote(v2, reason="test: hot reload")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and versions[v2] < 50:
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(timeout=15)

        assert not failures, failures[:5]
        assert set(versions) <= {"1", v2}
        assert versions["1"] > 0
        assert versions[v2] >= 50
        # once a request saw v2, later requests do not go back to v1 (bar the in-flight ones)
        first_v2 = sequence.index(v2)
        assert sequence[first_v2 + 8 :].count("1") == 0
        ready = httpx.get(f"{server.url}/readyz").json()["data"]
        assert ready["model_version"] == v2
        metrics = httpx.get(f"{server.url}/metrics").text
        assert f'loan_model_info{{model_alias="production",model_version="{v2}"}} 1.0' in metrics
        assert 'loan_model_info{model_alias="production",model_version="1"} 0.0' in metrics

        # rollback moves the alias back, and the server follows
        registry.rollback()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = httpx.post(f"{server.url}/api/v1/predict", json=GOOD, headers=JSON_HEADERS)
            if r.json()["data"]["model_version"] == "1":
                break
            time.sleep(0.2)
        assert r.json()["data"]["model_version"] == "1"
