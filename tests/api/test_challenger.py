"""A challenger on live traffic, in process, on a real MLflow store: v1 @production, v2
@challenger. The answer is production's alone (byte-identical to an app without a challenger),
the record carries the challenger on the sampled decisions, and /monitoring/challenger's numbers
are numpy's on the recorded rows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from loan_default.api.app import create_app
from loan_default.core.config import Settings
from loan_default.registry.client import Registry
from loan_default.services.challenger import sampled
from tests.conftest import TEST_API_KEY, RecordingDispatcher, copy_store, make_settings

pytestmark = pytest.mark.integration

AUDITOR = "auditor-" + "2" * 16
PREDICT = "/api/v1/predict"
ROUTE = "/api/v1/monitoring/challenger"
RATE = 0.5


def _headers(key: str = TEST_API_KEY) -> dict[str, str]:
    return {"X-API-Key": key, "Content-Type": "application/json"}


def _settings(store: Path, db: Path, **overrides: Any) -> Settings:
    return make_settings(
        store,
        api_keys=f"{TEST_API_KEY}:score,{AUDITOR}:audit",
        decision_store_url=f"sqlite:///{db}",
        rate_limit_per_minute=100_000,
        challenger_sampling_rate=RATE,
        **overrides,
    )


def _wait(client: TestClient, condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, client.get("/readyz").text
        time.sleep(0.05)


@pytest.fixture(scope="module")
def apps(
    trained_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, TestClient]]:
    """(with challenger, without): both from the registry, side by side on one store copy."""
    store = copy_store(trained_store, tmp_path_factory.mktemp("challenger") / "store")
    registry = Registry(make_settings(store))
    v1 = registry.client.get_model_version(registry.name, "1")
    v2 = registry.client.create_model_version(registry.name, v1.source, run_id=v1.run_id)
    registry.client.set_registered_model_alias(registry.name, "challenger", str(v2.version))
    with ExitStack() as stack:
        clients = []
        for name, alias in (("with", "challenger"), ("without", "")):
            settings = _settings(
                store,
                store / f"decisions-{name}.db",
                challenger_alias=alias,
                model_reload_interval_s=0.2,
            )
            app = create_app(settings, dispatcher=RecordingDispatcher())
            client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
            _wait(client, lambda c=client: c.get("/readyz").status_code == 200)
            clients.append(client)
        shadow = clients[0].app.state.challenger  # type: ignore[attr-defined]
        _wait(clients[0], lambda: shadow.bundle is not None)
        assert clients[1].app.state.challenger is None  # type: ignore[attr-defined]
        clients[0].app.state.registry = registry  # type: ignore[attr-defined]  # for the last test
        yield clients[0], clients[1]


def _bodies(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(11)
    return [
        {
            "employed": int(rng.integers(0, 2)),
            "bank_balance": round(float(rng.uniform(0, 30_000)), 2),
            "annual_salary": round(float(rng.uniform(5_000, 90_000)), 2),
        }
        for _ in range(n)
    ]


def test_answers_are_production_only_and_byte_identical(
    apps: tuple[TestClient, TestClient],
) -> None:
    with_c, without = apps
    for body in _bodies(30):
        a = with_c.post(PREDICT, json=body, headers=_headers())
        b = without.post(PREDICT, json=body, headers=_headers())
        assert a.status_code == b.status_code == 200, a.text
        ida, idb = a.json()["data"]["decision_id"], b.json()["data"]["decision_id"]
        assert a.content.replace(ida.encode(), b"ID") == b.content.replace(idb.encode(), b"ID")
        assert a.json()["data"]["model_version"] == "1"


def test_records_carry_the_challenger_on_sampled_decisions_and_the_report_is_numpys(
    apps: tuple[TestClient, TestClient],
) -> None:
    with_c, _ = apps
    time.sleep(0.01)  # the other test's decisions fall before the window
    now = datetime.now(UTC)
    start = now.replace(microsecond=now.microsecond // 1000 * 1000)
    ids: list[str] = []
    for body in _bodies(80):
        r = with_c.post(PREDICT, json=body, headers=_headers())
        assert r.status_code == 200, r.text
        ids.append(r.json()["data"]["decision_id"])
    end = datetime.now(UTC) + timedelta(seconds=1)
    bundle = with_c.app.state.challenger.bundle  # type: ignore[attr-defined]
    chosen = sampled(ids, RATE)
    assert 0 < chosen.sum() < len(ids)
    prod, chall, pred = [], [], []
    for did, is_sampled in zip(ids, chosen, strict=True):
        rec = with_c.get(f"/api/v1/decisions/{did}", headers=_headers(AUDITOR)).json()["data"]
        assert rec["model_version"] == "1"
        if not is_sampled:
            assert rec["challenger_version"] is None
            assert rec["challenger_probability"] is None
            continue
        assert rec["challenger_version"] == "2"
        raw = [[rec["employed"], rec["bank_balance"], rec["annual_salary"]]]
        assert rec["challenger_probability"] == float(bundle.score_raw(raw).probability[0])
        prod.append(rec["probability"])
        chall.append(rec["challenger_probability"])
        pred.append(rec["prediction"])

    window = {"from": start.isoformat(), "to": end.isoformat()}
    r = with_c.get(ROUTE, params=window, headers=_headers(AUDITOR))
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    p, c = np.array(prod), np.array(chall)
    agree = ((c >= bundle.card.threshold).astype(int) == np.array(pred)).mean()
    ranks = [np.argsort(np.argsort(x)) for x in (p, c)]  # no ties among these probabilities
    assert data["count"] == len(prod)
    assert data["production_versions"] == ["1"]
    assert data["challenger_versions"] == ["2"]
    assert data["agreement_rate"] == pytest.approx(agree, abs=1e-12)
    assert data["pearson"] == pytest.approx(np.corrcoef(p, c)[0, 1], abs=1e-12)
    if len(set(prod)) == len(prod):
        assert data["spearman"] == pytest.approx(np.corrcoef(*ranks)[0, 1], abs=1e-12)
    assert data["realized"] is None


def test_monitoring_route_scope_and_bad_times(apps: tuple[TestClient, TestClient]) -> None:
    with_c, without = apps
    forbidden = with_c.get(ROUTE, headers=_headers(TEST_API_KEY))
    assert forbidden.status_code == 403
    assert forbidden.json()["detail"]["required_scope"] == "audit"
    for params in ({"from": "925"}, {"from": "2026-02-01", "to": "2026-01-01"}):
        bad = with_c.get(ROUTE, params=params, headers=_headers(AUDITOR))
        assert bad.status_code == 422, bad.text
        assert bad.json()["success"] is False
    empty = without.get(ROUTE, headers=_headers(AUDITOR))
    assert empty.status_code == 200
    assert empty.json()["data"]["count"] == 0


def _recorded_challenger(client: TestClient) -> str | None:
    """Predict until a decision is sampled (or 50 tries); its record's challenger version."""
    for body in _bodies(50):
        did = client.post(PREDICT, json=body, headers=_headers()).json()["data"]["decision_id"]
        if sampled([did], RATE)[0]:
            rec = client.get(f"/api/v1/decisions/{did}", headers=_headers(AUDITOR)).json()
            return rec["data"]["challenger_version"]  # type: ignore[no-any-return]
    raise AssertionError("no decision sampled")


def test_moving_the_alias_swaps_the_challenger_and_removing_it_stops_shadowing(
    apps: tuple[TestClient, TestClient],
) -> None:
    """Last in the module: it moves the alias the other tests read."""
    with_c, _ = apps
    state = with_c.app.state  # type: ignore[attr-defined]
    registry: Registry = state.registry
    v1 = registry.client.get_model_version(registry.name, "1")
    v3 = registry.client.create_model_version(registry.name, v1.source, run_id=v1.run_id)
    registry.client.set_registered_model_alias(registry.name, "challenger", str(v3.version))
    _wait(with_c, lambda: getattr(state.challenger.bundle, "version", None) == str(v3.version))
    assert _recorded_challenger(with_c) == str(v3.version)
    registry.client.delete_registered_model_alias(registry.name, "challenger")
    _wait(with_c, lambda: state.challenger.service.bundle is None)
    assert _recorded_challenger(with_c) is None
    assert state.model_service.bundle.version == "1"  # production untouched throughout
