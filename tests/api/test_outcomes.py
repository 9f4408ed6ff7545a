"""Issue 14's outcome feedback over HTTP, in process: JSON and CSV uploads, the scopes, the
409 on a contradicting outcome, the 422s that name the item and field, the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from loan_default.services.decisions import new_decision_id
from tests.api.conftest import GOOD
from tests.api.test_decisions import _client, _headers
from tests.conftest import TEST_API_KEY, make_settings

pytestmark = pytest.mark.integration

# made-up keys (built, not literals, so the secret scan has nothing to flag)
FEEDER = "feeder-" + "4" * 16
AUDITOR = "auditor-" + "5" * 16
OUTCOMES = "/api/v1/outcomes"
FILE = OUTCOMES + "/file"
SEEN = "2026-06-30T12:00:00Z"


@pytest.fixture(scope="module")
def api(
    trained_store: Path, bundle: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("outcomes") / "decisions.db"
    settings = make_settings(
        trained_store,
        api_keys=f"{TEST_API_KEY},{FEEDER}:outcomes,{AUDITOR}:audit",
        decision_store_url=f"sqlite:///{db}",
        rate_limit_per_minute=100_000,
        outcomes_max_items=50,
        outcomes_file_max_rows=1000,
    )
    with _client(settings, bundle) as client:
        yield client


def decide(api: TestClient, reference: str | None = None) -> str:
    body = {**GOOD, **({"reference": reference} if reference else {})}
    r = api.post("/api/v1/predict", json=body, headers=_headers(TEST_API_KEY))
    assert r.status_code == 200, r.text
    decision_id: str = r.json()["data"]["decision_id"]
    return decision_id


def post(api: TestClient, items: list[dict[str, Any]], key: str = FEEDER) -> Any:
    return api.post(OUTCOMES, json={"outcomes": items}, headers=_headers(key))


def upload(api: TestClient, csv: str, key: str = FEEDER) -> Any:
    files = {"file": ("outcomes.csv", csv.encode(), "text/csv")}
    return api.post(FILE, files=files, headers={"X-API-Key": key})


def test_json_outcomes_are_recorded_and_a_resend_changes_nothing(api: TestClient) -> None:
    first, second = decide(api), decide(api, reference="APP-OUT-1")
    unknown = new_decision_id()
    items = [
        {"decision_id": first, "defaulted": True, "observed_at": SEEN},
        {"reference": "APP-OUT-1", "defaulted": False, "observed_at": "2026-06-30"},
        {"decision_id": unknown, "defaulted": False, "observed_at": "2026-06-30T14:00+02:00"},
    ]
    r = post(api, items)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert body["data"] == {
        "received": 3,
        "inserted": 2,
        "unchanged": 0,
        "unknown": 1,
        "unknown_items": [unknown],
    }
    assert body["message"] == "2 outcome(s) recorded, 0 unchanged, 1 unknown"
    again = post(api, [*items[:2], {**items[0], "decision_id": first.upper()}], key=AUDITOR)
    assert again.status_code == 200, again.text  # an audit key may report outcomes too
    assert again.json()["data"]["unchanged"] == 3
    assert again.json()["data"]["inserted"] == 0
    assert second  # recorded by reference: the next test contradicts it


def test_a_contradicting_outcome_is_409_naming_it_and_nothing_is_written(
    api: TestClient,
) -> None:
    decided, fresh = decide(api), decide(api)
    assert post(api, [{"decision_id": decided, "defaulted": True, "observed_at": SEEN}]).is_success
    r = post(
        api,
        [
            {"decision_id": fresh, "defaulted": True, "observed_at": SEEN},
            {"decision_id": decided, "defaulted": False, "observed_at": SEEN},
        ],
    )
    assert r.status_code == 409, r.text
    err = r.json()
    assert err["success"] is False
    assert err["error"] == "outcome_conflict"
    assert err["detail"] == {"conflicts": 1, "decision_ids": [decided]}
    assert decided in err["message"]
    # `fresh` was not recorded with the refused request: it is new now
    ok = post(api, [{"decision_id": fresh, "defaulted": False, "observed_at": SEEN}])
    assert ok.json()["data"]["inserted"] == 1


def test_a_score_key_is_refused_naming_the_outcomes_scope(api: TestClient) -> None:
    item = {"decision_id": new_decision_id(), "defaulted": True, "observed_at": SEEN}
    for r in (post(api, [item], key=TEST_API_KEY), upload(api, "x", key=TEST_API_KEY)):
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "insufficient_scope"
        assert r.json()["detail"] == {"required_scope": "outcomes"}
        assert "'outcomes'" in r.json()["message"]
    assert api.post(OUTCOMES, json={"outcomes": [item]}).status_code == 401


@pytest.mark.parametrize(
    ("item", "field", "words"),
    [
        ({"defualted": True}, "outcomes.1", "unknown field 'defualted'"),
        ({"observed_at": "30/06/2026"}, "outcomes.1.observed_at", "ISO 8601"),
        ({"observed_at": 1782820800}, "outcomes.1.observed_at", "ISO 8601"),
        ({"defaulted": "yes"}, "outcomes.1.defaulted", "boolean"),
        ({"decision_id": "123"}, "outcomes.1.decision_id", "not a decision id"),
        ({"reference": "APP-1"}, "outcomes.1", "exactly one of decision_id and reference"),
        ({"decision_id": None}, "outcomes.1", "exactly one of decision_id and reference"),
        ({"reference": " APP-1"}, "outcomes.1.reference", "printable ASCII"),
    ],
)
def test_an_invalid_item_is_422_naming_its_index_and_field(
    api: TestClient, item: dict[str, Any], field: str, words: str
) -> None:
    good = {"decision_id": new_decision_id(), "defaulted": True, "observed_at": SEEN}
    bad = {**good, **item}
    r = post(api, [good, bad])
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["error"] == "validation_error"
    assert field in err["message"]
    assert words in err["message"]


def test_json_bodies_are_bounded_and_must_be_json(api: TestClient) -> None:
    item = {"decision_id": new_decision_id(), "defaulted": True, "observed_at": SEEN}
    r = post(api, [item] * 51)  # OUTCOMES_MAX_ITEMS = 50 here
    assert r.status_code == 422
    assert "at most 50 outcomes" in r.json()["message"]
    assert post(api, []).status_code == 422
    r = api.post(OUTCOMES, json={"outcomes": [item], "extra": 1}, headers=_headers(FEEDER))
    assert r.status_code == 422
    assert "unknown field 'extra'" in r.json()["message"]
    raw = (
        b'{"outcomes": [{"decision_id": "%s", "defaulted": true, "defaulted": false, '
        b'"observed_at": "2026-06-30"}]}'
    )
    r = api.post(OUTCOMES, content=raw % item["decision_id"].encode(), headers=_headers(FEEDER))
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "duplicate_key"
    r = api.post(OUTCOMES, content=b"x", headers={"X-API-Key": FEEDER, "Content-Type": "text/csv"})
    assert r.status_code == 415


def test_a_csv_upload_records_by_id_and_by_reference(api: TestClient) -> None:
    ids = [decide(api) for _ in range(3)]
    decide(api, reference="APP-CSV-7")
    unknown = new_decision_id()
    csv = (
        "decision_id,reference,defaulted,observed_at\n"
        f"{ids[0]},,1,2026-06-30T12:00:00Z\n"
        f"{ids[1].upper()},,false,2026-06-30\n"
        f"{ids[2]},,TRUE,2026-06-30 08:00:00+02:00\n"
        ",APP-CSV-7,0,2026-07-01T00:00\n"
        f"{unknown},,0,2026-07-01\n"
    )
    r = upload(api, csv)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {
        "received": 5,
        "inserted": 4,
        "unchanged": 0,
        "unknown": 1,
        "unknown_items": [unknown],
    }
    assert upload(api, csv).json()["data"]["unchanged"] == 4
    # the same decisions with one contradiction: 409, and the CSV as a whole is refused
    flipped = csv.replace(f"{ids[0]},,1,", f"{ids[0]},,0,")
    r = upload(api, flipped)
    assert r.status_code == 409
    assert r.json()["detail"]["decision_ids"] == [ids[0]]
    # only the needed columns: decision_id alone is enough
    only_ids = f"decision_id,defaulted,observed_at\n{decide(api)},1,2026-06-30\n"
    assert upload(api, only_ids).json()["data"]["inserted"] == 1


def test_a_bad_csv_is_422_naming_rows_and_fields(api: TestClient) -> None:
    did = decide(api)
    bad = (
        "decision_id,reference,defaulted,observed_at\n"
        f"{did},,1,2026-06-30\n"
        f"{did},,yes,2026-06-30\n"
        "nope,,1,2026-06-30\n"
        f"{did},APP-1,1,2026-06-30\n"
        f"{did},,1,2026-13-01\n"
        ",,1,2026-06-30\n"
    )
    r = upload(api, bad)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["detail"]["bad_rows"] == 5
    rows = [(e["row"], e["field"]) for e in err["detail"]["rows"]]
    assert rows == [
        (2, "defaulted"),
        (3, "decision_id"),
        (4, "decision_id/reference"),
        (5, "observed_at"),
        (6, "decision_id/reference"),
    ]
    assert "nothing was recorded" in err["message"]
    r = upload(api, "decision_id,defaulted,observed_at,amount\n")
    assert r.status_code == 422
    assert r.json()["detail"]["unknown"] == ["amount"]
    r = upload(api, "decision_id,observed_at\n")
    assert r.json()["detail"]["missing"] == ["defaulted"]
    r = upload(api, "defaulted,observed_at\n1,2026-06-30\n")
    assert r.json()["detail"]["missing"] == ["decision_id or reference"]
    r = upload(api, "decision_id,defaulted,observed_at\n" + f"{did},1,2026-06-30\n" * 1001)
    assert r.status_code == 422
    assert r.json()["detail"] == {"rows": 1001, "max_rows": 1000}
    r = api.post(FILE, files={"other": ("a.csv", b"x")}, headers={"X-API-Key": FEEDER})
    assert r.status_code == 422
    assert "file" in r.json()["message"]


def test_the_routes_document_their_envelopes(api: TestClient) -> None:
    doc = api.get("/openapi.json").json()
    for path in (OUTCOMES, FILE):
        op = doc["paths"][path]["post"]
        assert "$defs" not in str(op["requestBody"])  # refs must resolve from the root
        for status in ("200", "401", "403", "409", "413", "422", "429", "503"):
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert "$ref" in schema, (path, status)
