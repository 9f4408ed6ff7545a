"""Issue 13 over HTTP, in process: every prediction recorded before it is answered, read back
by id and by reference, scoped by key, reasons on adverse decisions, and the store-down policy."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from loan_default.api.app import create_app
from loan_default.core.config import Settings
from loan_default.services.model import ModelService
from tests.api.conftest import GOOD
from tests.conftest import TEST_API_KEY, RecordingDispatcher, make_settings
from tests.services.decisions.conftest import pg_admin, pg_database  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

# made-up keys for other callers (built, not literals, so the secret scan has nothing to flag)
OTHER = "other-" + "1" * 16
AUDITOR = "auditor-" + "2" * 16
ADMIN_ONLY = "admin-" + "3" * 16
PREDICT = "/api/v1/predict"


def _headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key, "Content-Type": "application/json"}


def _key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _client(settings: Settings, bundle: Any) -> TestClient:
    app = create_app(
        settings,
        model_service=ModelService(settings=settings, bundle=bundle),
        dispatcher=RecordingDispatcher(),
    )
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def api(
    trained_store: Path, bundle: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("decisions") / "decisions.db"
    settings = make_settings(
        trained_store,
        api_keys=f"{TEST_API_KEY},{OTHER}:score,{AUDITOR}:audit,{ADMIN_ONLY}:admin",
        decision_store_url=f"sqlite:///{db}",
        rate_limit_per_minute=100_000,
    )
    with _client(settings, bundle) as client:
        yield client


def _adverse_body(bundle: Any) -> dict[str, float]:
    for balance in np.linspace(1_000, 60_000, 119):
        body = {"employed": 1, "bank_balance": float(balance), "annual_salary": 30_000.0}
        if bundle.score_one(1, float(balance), 30_000.0).prediction == 1:
            return body
    raise AssertionError("no adverse row found")


def test_a_prediction_is_recorded_before_it_is_answered(api: TestClient, bundle: Any) -> None:
    r = api.post(PREDICT, json={**GOOD, "reference": "APP-7"}, headers=_headers(TEST_API_KEY))
    assert r.status_code == 200, r.text
    answer = r.json()["data"]
    decision_id = answer["decision_id"]
    got = api.get(f"/api/v1/decisions/{decision_id}", headers=_headers(TEST_API_KEY))
    assert got.status_code == 200, got.text
    rec = got.json()["data"]
    assert rec["decision_id"] == decision_id
    assert rec["reference"] == "APP-7"
    assert rec["probability"] == answer["probability"]
    assert rec["prediction"] == answer["prediction"]
    assert rec["risk_band"] == answer["default_risk"]
    assert rec["model_version"] == "1"
    assert rec["model_name"] == "loan-default"
    assert rec["model_alias"] == "production"
    assert rec["threshold"] == bundle.card.threshold
    assert rec["key_id"] == _key_id(TEST_API_KEY)
    assert TEST_API_KEY not in got.text
    for name, value in answer["features_used"].items():
        assert rec[name] == value
    assert rec["source"] == "predict"
    assert rec["job_id"] is None
    assert rec["decided_at"].endswith("Z")
    assert rec["request_id"] == r.headers["x-request-id"]


def test_an_adverse_decision_carries_its_reasons(api: TestClient, bundle: Any) -> None:
    body = _adverse_body(bundle)
    answers = [api.post(PREDICT, json=body, headers=_headers(TEST_API_KEY)) for _ in range(3)]
    reasons = [a.json()["data"]["reasons"] for a in answers]
    assert reasons[0] == reasons[1] == reasons[2]  # same inputs, same model: same codes, order
    assert 1 <= len(reasons[0]) <= 4
    table = bundle.reason_table
    assert all(item["text"] == table.text(item["code"]) for item in reasons[0])
    codes = [item["code"] for item in reasons[0]]
    row = [1.0, body["bank_balance"], body["annual_salary"], body["bank_balance"] / 30_000.0]
    assert tuple(codes) == bundle.reasons_row(row)
    rec = api.get(
        f"/api/v1/decisions/{answers[0].json()['data']['decision_id']}",
        headers=_headers(TEST_API_KEY),
    ).json()["data"]
    assert rec["reason_codes"] == codes
    assert rec["reasons"] == reasons[0]
    good = api.post(PREDICT, json=GOOD, headers=_headers(TEST_API_KEY)).json()["data"]
    assert good["prediction"] == 0
    assert good["reasons"] == []
    explained = api.post(
        PREDICT + "?explain=true", json=GOOD, headers=_headers(TEST_API_KEY)
    ).json()["data"]
    assert "contributions" in explained
    assert all(
        explained["contributions"][f] > 0
        for r in explained["reasons"]
        for f in next(c.features for c in table.codes if c.code == r["code"])
    )


def test_scopes_decide_who_reads_a_decision(api: TestClient) -> None:
    made = api.post(PREDICT, json={**GOOD, "reference": "APP-scope"}, headers=_headers(OTHER))
    decision_id = made.json()["data"]["decision_id"]
    path = f"/api/v1/decisions/{decision_id}"
    assert api.get(path, headers=_headers(OTHER)).status_code == 200
    # another score key: exactly the answer of an unknown id (existence is not leaked)
    theirs = api.get(path, headers=_headers(TEST_API_KEY))
    unknown = api.get(
        "/api/v1/decisions/" + "0" * 8 + decision_id[8:], headers=_headers(TEST_API_KEY)
    )
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["message"] == unknown.json()["message"]
    assert api.get(path, headers=_headers(AUDITOR)).status_code == 200
    denied = api.get(path, headers=_headers(ADMIN_ONLY))
    assert denied.status_code == 403
    assert denied.json()["error"] == "insufficient_scope"
    assert denied.json()["detail"] == {"required_scope": "audit"}
    # an audit key cannot score
    assert api.post(PREDICT, json=GOOD, headers=_headers(AUDITOR)).status_code == 403
    # by reference: the owner and the auditor see it, another score key sees nothing
    q = "/api/v1/decisions?reference=APP-scope"
    assert [
        d["decision_id"] for d in api.get(q, headers=_headers(OTHER)).json()["data"]["decisions"]
    ] == [decision_id]
    assert [
        d["decision_id"] for d in api.get(q, headers=_headers(AUDITOR)).json()["data"]["decisions"]
    ] == [decision_id]
    assert api.get(q, headers=_headers(TEST_API_KEY)).json()["data"]["decisions"] == []
    assert api.get("/api/v1/decisions/not-an-id", headers=_headers(AUDITOR)).status_code == 404


def test_listing_pages_through_every_decision_once(api: TestClient) -> None:
    ids = [
        api.post(
            PREDICT, json={**GOOD, "reference": "APP-page"}, headers=_headers(TEST_API_KEY)
        ).json()["data"]["decision_id"]
        for _ in range(7)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"reference": "APP-page", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/api/v1/decisions", params=params, headers=_headers(AUDITOR)).json()["data"]
        seen += [d["decision_id"] for d in page["decisions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids  # time order, each once
    first = api.get(f"/api/v1/decisions/{ids[0]}", headers=_headers(AUDITOR)).json()["data"]
    window = api.get(
        "/api/v1/decisions",
        params={"reference": "APP-page", "from": first["decided_at"], "model_version": "1"},
        headers=_headers(AUDITOR),
    ).json()["data"]["decisions"]
    assert [d["decision_id"] for d in window] == ids
    bad = api.get("/api/v1/decisions", params={"limit": 0}, headers=_headers(AUDITOR))
    assert bad.status_code == 422
    assert "limit" in bad.json()["message"]
    bad = api.get("/api/v1/decisions", params={"cursor": "!!"}, headers=_headers(AUDITOR))
    assert bad.status_code == 422
    # found by schemathesis: a bare number was read as a Unix time (925 -> 1970-01-01T00:15:25Z)
    for field in ("from", "to"):
        bad = api.get("/api/v1/decisions", params={field: "925"}, headers=_headers(AUDITOR))
        assert bad.status_code == 422, bad.text
        assert field in bad.json()["message"]
        assert "ISO 8601" in bad.json()["message"]
    naive = api.get(
        "/api/v1/decisions",
        params={"reference": "APP-page", "from": first["decided_at"].removesuffix("Z")},
        headers=_headers(AUDITOR),
    ).json()["data"]["decisions"]
    assert [d["decision_id"] for d in naive] == ids  # no offset: read as UTC


def _unreachable_settings(trained_store: Path, mode: str) -> Settings:
    from tests.conftest import free_port

    return make_settings(
        trained_store,
        decision_store_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
        decision_recording=mode,
    )


def test_store_down_required_answers_503_and_readyz_says_so(
    trained_store: Path, bundle: Any
) -> None:
    with _client(_unreachable_settings(trained_store, "required"), bundle) as client:
        r = client.post(PREDICT, json=GOOD, headers=_headers(TEST_API_KEY))
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "decision_store_unavailable"
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["data"]["reason"] == "decision_store_unavailable"
        assert ready.json()["data"]["decision_store"]["status"] == "unavailable"
        assert "127.0.0.1" not in ready.text


def test_store_down_best_effort_serves_and_counts_the_loss(
    trained_store: Path, bundle: Any
) -> None:
    from tests.api.conftest import metric_value

    with _client(_unreachable_settings(trained_store, "best_effort"), bundle) as client:
        before = metric_value(client.get("/metrics").text, "loan_decisions_lost_total") or 0
        r = client.post(PREDICT, json=GOOD, headers=_headers(TEST_API_KEY))
        assert r.status_code == 200
        assert r.json()["data"]["decision_id"] is None
        after = metric_value(client.get("/metrics").text, "loan_decisions_lost_total") or 0
        assert after == before + 1
        assert client.get("/readyz").status_code == 200


def test_recording_resumes_when_the_store_comes_back(
    trained_store: Path,
    bundle: Any,
    pg_database: tuple[str, str],  # noqa: F811 - the fixture
) -> None:
    """PostgreSQL refusing connections at start-up, then accepting: no restart needed."""
    url, name = pg_database
    admin = pg_admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
    settings = make_settings(trained_store, decision_store_url=url)
    try:
        with _client(settings, bundle) as client:
            assert (
                client.post(PREDICT, json=GOOD, headers=_headers(TEST_API_KEY)).status_code == 503
            )
            with admin.connect() as conn:
                conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            import time

            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                r = client.post(PREDICT, json=GOOD, headers=_headers(TEST_API_KEY))
                if r.status_code == 200:
                    break
                time.sleep(0.2)
            assert r.status_code == 200, r.text
            decision_id = r.json()["data"]["decision_id"]
            got = client.get(f"/api/v1/decisions/{decision_id}", headers=_headers(TEST_API_KEY))
            assert got.status_code == 200
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
