"""Registry faults against a real server: MLflow unreachable mid-flight, bad versions promoted."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from loan_default.model.bundle import BOOSTER_FILE, CARD_FILE
from loan_default.registry.client import Registry
from tests.api.conftest import GOOD, JSON_HEADERS, Server, metric_value, running, store_env
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


def _wait(predicate, timeout: float = 30.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Hammer:
    """Threads sending predictions until stopped; records statuses and versions served."""

    def __init__(self, server: Server, threads: int = 2) -> None:
        self.server = server
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=10) as client:
            while not self._stop.is_set():
                r = client.post("/api/v1/predict", json=GOOD, headers=JSON_HEADERS)
                self.statuses[r.status_code] += 1
                if r.status_code == 200:
                    self.versions[r.json()["data"]["model_version"]] += 1
                time.sleep(0.005)

    def __enter__(self) -> Hammer:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)


def _ready_version(server: Server) -> str:
    r = httpx.get(f"{server.url}/readyz", timeout=5)
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["model_version"])


def _register(registry: Registry, source: Path) -> str:
    return str(registry.client.create_model_version(registry.name, str(source)).version)


def test_mlflow_unreachable_during_reload(fresh_store: Path, tmp_path: Path) -> None:
    """The store disappears under a serving API, a version is promoted meanwhile, it returns."""
    env = store_env(
        fresh_store,
        rate_limit_per_minute=1_000_000,
        model_reload_interval_s=0.3,
        # a new SQLite connection per registry call, so a vanished store is seen at once
        mlflow_sqlalchemystore_poolclass="NullPool",
        # only MLflow goes away: the decision record must not move with the renamed directory
        # (its /readyz probe then, rightly, answers 503 whenever no group committed lately)
        decision_store_url=f"sqlite:///{tmp_path / 'decisions.db'}",
    )
    away = fresh_store.with_name("store-away")
    with running(env, tmp_path / "srv") as server:
        assert _ready_version(server) == "1"
        # what a retrain registers while MLflow is down (through its own, working, path)
        registry = Registry(make_settings(fresh_store))
        v1 = registry.client.get_model_version(registry.name, "1")
        with Hammer(server) as hammer:
            time.sleep(0.5)
            fresh_store.rename(away)  # the tracking store is gone
            try:
                _wait(
                    lambda: "model registry unreachable" in server.logs(),
                    what="the unreachable warning",
                )
                time.sleep(2.0)  # several reload polls fail meanwhile
                assert _ready_version(server) == "1"
            finally:
                away.rename(fresh_store)
            registry = Registry(make_settings(fresh_store))
            v2 = str(
                registry.client.create_model_version(
                    registry.name, v1.source, run_id=v1.run_id
                ).version
            )
            registry.promote(v2, reason="test: promoted while the API could not see MLflow")
            _wait(lambda: hammer.versions[v2] >= 20, what=f"v{v2} served after recovery")
        logs = server.logs()
        # once per outage and alias (the challenger, when set, follows its own)
        assert logs.count("model registry unreachable (@production,") == 1, logs
        assert "model registry reachable again" in logs
        assert set(hammer.statuses) == {200}, hammer.statuses
        assert hammer.versions["1"] > 0
        assert _ready_version(server) == v2


def test_bad_versions_are_refused(fresh_store: Path, tmp_path: Path) -> None:
    """A corrupt booster, then a card with another feature list: refused, v1 keeps serving."""
    registry = Registry(make_settings(fresh_store))
    good = registry.download_bundle_dir("1", tmp_path / "v1")
    corrupt = shutil.copytree(good, tmp_path / "corrupt")
    (corrupt / BOOSTER_FILE).write_bytes(b"\x00not a booster" * 64)
    alien = shutil.copytree(good, tmp_path / "alien")
    card = json.loads((alien / CARD_FILE).read_text())
    card["features"] = [*card["features"], "age"]
    (alien / CARD_FILE).write_text(json.dumps(card))

    env = store_env(fresh_store, rate_limit_per_minute=1_000_000, model_reload_interval_s=0.3)
    with running(env, tmp_path / "srv") as server:
        info_before = httpx.get(f"{server.url}/api/v1/model/info", headers=JSON_HEADERS).json()
        with Hammer(server) as hammer:
            for source, reason in ((corrupt, "corrupt"), (alien, "do not match")):
                version = _register(registry, source)
                registry.promote(version, reason=f"test: bad {reason}")
                needle = f"refusing model version {version}"
                _wait(lambda needle=needle: needle in server.logs(), what=needle)
                time.sleep(1.0)  # several more polls while the alias stays on the bad version
                line = next(ln for ln in server.logs().splitlines() if needle in ln)
                assert reason in line, line
                assert "still serving v1" in line
                assert server.logs().count(needle) == 1, "a refused version is not retried"
                assert _ready_version(server) == "1"
            # a good version promoted after the bad ones is taken
            fixed = _register(registry, good)
            registry.promote(fixed, reason="test: good again")
            _wait(lambda: hammer.versions[fixed] >= 10, what=f"v{fixed} served")
        assert set(hammer.statuses) == {200}, hammer.statuses
        assert set(hammer.versions) == {"1", fixed}, "no request saw a refused version"
        # nothing half-swapped while the bad versions were refused: card, gauge and drift
        # reference all moved together to the good version only
        info = httpx.get(f"{server.url}/api/v1/model/info", headers=JSON_HEADERS).json()["data"]
        assert info["model_version"] == fixed
        assert info["features"] == info_before["data"]["features"]
        text = httpx.get(f"{server.url}/metrics").text
        assert metric_value(text, "loan_model_info", {"model_version": fixed}) == 1.0
        for bad in ("2", "3"):
            assert metric_value(text, "loan_model_info", {"model_version": bad}) is None
        drift = httpx.get(f"{server.url}/api/v1/monitoring/drift", headers=JSON_HEADERS).json()
        assert drift["data"]["reference_model_version"] == fixed
        assert "Traceback" not in server.logs()
