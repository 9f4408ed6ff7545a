"""The batch contract against a real uvicorn API, a real Celery worker and the real Redis."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from loan_default.core.config import Settings
from loan_default.services.decisions import valid_decision_id
from tests.conftest import TEST_API_KEY, free_port, redis_url
from tests.worker.conftest import CLI, HEADERS, Proc, batch_settings, settings_env, wait_job
from tests.worker.conftest import wait_ready as _wait_ready

pytestmark = pytest.mark.integration

OTHER_KEY = "second-client-key-0123"

ITEM = {"employed": 1, "bank_balance": 8754.36, "annual_salary": 532339.56}


@pytest.fixture(scope="module")
def stack(
    trained_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, httpx.Client]]:
    tmp = tmp_path_factory.mktemp("batch-api")
    settings = batch_settings(
        trained_store,
        tmp,
        batch_chunk_size=100,
        batch_page_max_rows=500,
        api_keys=f"{TEST_API_KEY},{OTHER_KEY}",
    )
    env = settings_env(settings)
    port = free_port()
    api = Proc([*CLI, "serve", "--port", str(port)], env=env, log=tmp / "api.log", cwd=tmp)
    worker = Proc([*CLI, "worker", "--pool", "solo"], env=env, log=tmp / "worker.log", cwd=tmp)
    try:
        api.start()
        worker.start()
        _wait_ready(f"http://127.0.0.1:{port}", api)
        worker.wait_for_log("batch worker ready", timeout=90)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=30
        ) as client:
            yield settings, client
    finally:
        worker.stop()
        api.stop()
        r = redis.Redis.from_url(redis_url(5))
        keys = list(r.scan_iter(match=settings.batch_key_prefix + "*"))
        if keys:
            r.delete(*keys)


def _job_keys(settings: Settings) -> int:
    r = redis.Redis.from_url(redis_url(5))
    return sum(1 for _ in r.scan_iter(match=settings.batch_key_prefix + "*:rec"))


def test_submit_202_then_success_identical_to_single(stack: tuple[Settings, httpx.Client]) -> None:
    _, client = stack
    items = [ITEM, {"employed": 0, "bank_balance": 0, "annual_salary": 1.5}]
    items += [
        {"employed": i % 2, "bank_balance": 37.5 * i, "annual_salary": 900 + i} for i in range(250)
    ]
    r = client.post("/api/v1/predict/batch", json={"predictions": items})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["success"] is True
    data = body["data"]
    assert data["status"] == "PENDING"
    assert data["total_predictions"] == len(items)
    assert set(data) >= {"job_id", "status", "message", "total_predictions"}
    done = wait_job(client, data["job_id"])
    assert done["status"] == "SUCCESS"
    assert done["progress"] == 100
    assert done["total"] == done["completed"] == len(items)
    assert done["model_version"] == "1"
    assert len(done["results"]) == len(items)
    for item, result in zip(items[:20], done["results"][:20], strict=True):
        single = client.post("/api/v1/predict", json=item).json()["data"]
        single.pop("model_version")
        # each is its own decision: a recorded id apiece, the rest identical
        assert valid_decision_id(result.pop("decision_id"))
        assert valid_decision_id(single.pop("decision_id"))
        assert result == single


def test_paging_and_results_csv(stack: tuple[Settings, httpx.Client]) -> None:
    _, client = stack
    items = [{"employed": 1, "bank_balance": float(i), "annual_salary": 1000.0} for i in range(700)]
    job = client.post("/api/v1/predict/batch", json={"predictions": items}).json()["data"]["job_id"]
    first = wait_job(client, job)
    assert len(first["results"]) == 500
    assert first["next_offset"] == 500
    page = client.get(f"/api/v1/predict/batch/{job}", params={"offset": 650, "limit": 100}).json()
    assert [r["features_used"]["bank_balance"] for r in page["data"]["results"]] == [
        float(i) for i in range(650, 700)
    ]
    assert page["data"]["next_offset"] is None
    assert client.get(f"/api/v1/predict/batch/{job}", params={"limit": 501}).status_code == 422
    assert client.get(f"/api/v1/predict/batch/{job}", params={"offset": -1}).status_code == 422
    with client.stream("GET", f"/api/v1/predict/batch/{job}/results.csv") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/csv")
        text = resp.read().decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [float(r["bank_balance"]) for r in rows] == [float(i) for i in range(700)]
    assert {"prediction", "probability", "default_risk"} <= set(rows[0])


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"employed": 2, "bank_balance": 1, "annual_salary": 1}, "employed"),
        ({"employed": 1, "bank_balance": -1, "annual_salary": 1}, "bank_balance"),
        ({"employed": 1, "bank_balance": 1, "annual_salary": 0}, "annual_salary"),
        ({"employed": 1, "bank_balance": "12", "annual_salary": 1}, "bank_balance"),
        ({"employed": 1, "bank_balance": 1}, "annual_salary"),
    ],
)
def test_one_bad_item_is_422_naming_index_and_field_and_creates_no_job(
    stack: tuple[Settings, httpx.Client], bad: dict[str, Any], field: str
) -> None:
    settings, client = stack
    before = _job_keys(settings)
    r = client.post("/api/v1/predict/batch", json={"predictions": [ITEM, ITEM, ITEM, bad]})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["success"] is False
    assert any(e["loc"][-2:] == [3, field] for e in body["detail"]), body
    assert f"predictions.3.{field}" in body["message"]
    assert _job_keys(settings) == before


@pytest.mark.parametrize(
    "payload",
    [{"predictions": []}, {"predictions": [ITEM] * 1001}, {"rows": [ITEM]}, [ITEM]],
)
def test_empty_oversized_or_misshapen_bodies_are_422(
    stack: tuple[Settings, httpx.Client], payload: Any
) -> None:
    settings, client = stack
    before = _job_keys(settings)
    assert client.post("/api/v1/predict/batch", json=payload).status_code == 422
    assert _job_keys(settings) == before


def test_unknown_and_malformed_ids_are_404(stack: tuple[Settings, httpx.Client]) -> None:
    _, client = stack
    for job_id in (str(uuid.uuid4()), "not-a-job", "1" * 36, "%2e%2e"):
        r = client.get(f"/api/v1/predict/batch/{job_id}")
        assert r.status_code == 404, (job_id, r.text)
        assert r.json()["success"] is False
        assert client.get(f"/api/v1/predict/batch/{job_id}/results.csv").status_code == 404


def test_jobs_need_a_valid_key(stack: tuple[Settings, httpx.Client]) -> None:
    _, client = stack
    job = client.post("/api/v1/predict/batch", json={"predictions": [ITEM]}).json()["data"]
    url = f"/api/v1/predict/batch/{job['job_id']}"
    assert client.get(url, headers={"X-API-Key": ""}).status_code == 401
    assert client.get(url, headers={"X-API-Key": "wrong"}).status_code == 403
    r = client.post(
        "/api/v1/predict/batch", json={"predictions": [ITEM]}, headers={"X-API-Key": ""}
    )
    assert r.status_code == 401
    assert client.get(url, headers={"X-API-Key": TEST_API_KEY}).status_code == 200


def test_idempotency_key_replays_the_same_job(stack: tuple[Settings, httpx.Client]) -> None:
    settings, client = stack
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    body = {"predictions": [ITEM, ITEM]}
    first = client.post("/api/v1/predict/batch", json=body, headers=key)
    before = _job_keys(settings)
    again = client.post("/api/v1/predict/batch", json=body, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json()["data"]["job_id"] == first.json()["data"]["job_id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert _job_keys(settings) == before
    other = client.post("/api/v1/predict/batch", json={"predictions": [ITEM]}, headers=key)
    assert other.status_code == 409


def test_idempotency_keys_are_scoped_to_the_api_key(stack: tuple[Settings, httpx.Client]) -> None:
    _, client = stack
    key = f"k-{uuid.uuid4()}"
    body = {"predictions": [ITEM]}
    mine = client.post("/api/v1/predict/batch", json=body, headers={"Idempotency-Key": key})
    theirs = client.post(
        "/api/v1/predict/batch",
        json=body,
        headers={"Idempotency-Key": key, "X-API-Key": OTHER_KEY},
    )
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["data"]["job_id"] != theirs.json()["data"]["job_id"]
    assert "idempotent-replayed" not in theirs.headers


def test_file_upload_skip_and_reject(stack: tuple[Settings, httpx.Client]) -> None:
    settings, client = stack
    lines = ["loan_id,Employed,Bank Balance,Annual Salary"]
    lines += [f"A{i},{i % 2},{10.0 * i},{5000 + i}" for i in range(300)]
    lines[43] = "A42,1,abc,5000"
    data = ("\n".join(lines) + "\n").encode()
    files = {"file": ("book.csv", data, "text/csv")}
    before = _job_keys(settings)
    r = client.post("/api/v1/predict/batch/file", files=files)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["rows"] == [
        {
            "row": 43,
            "field": "bank_balance",
            "reason": "bank_balance is missing, not a number or not finite",
        }
    ]
    assert _job_keys(settings) == before
    r = client.post("/api/v1/predict/batch/file", params={"on_error": "skip"}, files=files)
    assert r.status_code == 202, r.text
    sub = r.json()["data"]
    assert sub["total_predictions"] == 299
    assert sub["skipped"] == 1
    done = wait_job(client, sub["job_id"])
    assert done["status"] == "SUCCESS"
    assert done["completed"] == 299
    text = client.get(f"/api/v1/predict/batch/{sub['job_id']}/results.csv").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["loan_id"] for r in rows] == [f"A{i}" for i in range(300) if i != 42]
    bad = client.post(
        "/api/v1/predict/batch/file", files={"file": ("x.csv", b"a,b\n1,2\n", "text/csv")}
    )
    assert bad.status_code == 422
    assert "missing" in bad.json()["detail"]
    assert (
        client.post(
            "/api/v1/predict/batch/file", params={"on_error": "maybe"}, files=files
        ).status_code
        == 422
    )


def test_readyz_reports_the_broker(stack: tuple[Settings, httpx.Client]) -> None:
    _, client = stack
    body = client.get("/readyz").json()
    assert body["data"]["broker"]["type"] == "redis"
    assert body["data"]["broker"]["status"] == "ok"


def test_uploads_may_exceed_the_json_body_limit(stack: tuple[Settings, httpx.Client]) -> None:
    settings, client = stack
    n = 120_000  # ~3.4 MB: above MAX_BODY_BYTES (2 MB), below MAX_UPLOAD_BYTES
    data = b"Employed,Bank Balance,Annual Salary\n" + b"1,12345.678901,45678.901234\n" * n
    assert len(data) > settings.max_body_bytes
    r = client.post("/api/v1/predict/batch/file", files={"file": ("big.csv", data, "text/csv")})
    assert r.status_code == 202, r.text
    assert wait_job(client, r.json()["data"]["job_id"], limit=1)["completed"] == n
    big_json = b'{"predictions": [' + b"0," * settings.max_body_bytes + b"0]}"
    r = client.post(
        "/api/v1/predict/batch", content=big_json, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


# --- issue 11 (batch surface): regression tests against the real stack ------------------------
def test_another_key_cannot_read_a_job(stack: tuple[Settings, httpx.Client]) -> None:
    """Item 3: a job belongs to the key that submitted it; another key gets the 404 of an
    unknown id (same status, same message shape), for the status, a page and results.csv."""
    _, client = stack
    r = client.post("/api/v1/predict/batch", json={"predictions": [ITEM]})
    job = r.json()["data"]["job_id"]
    assert wait_job(client, job)["status"] == "SUCCESS"
    other = {"X-API-Key": OTHER_KEY}
    unknown = str(uuid.uuid4())
    for suffix in ("", "?offset=0&limit=1", "/results.csv"):
        theirs = client.get(f"/api/v1/predict/batch/{job}{suffix}", headers=other)
        nobody = client.get(f"/api/v1/predict/batch/{unknown}{suffix}", headers=other)
        assert theirs.status_code == nobody.status_code == 404, theirs.text
        assert theirs.json()["message"] == nobody.json()["message"].replace(unknown, job)
        assert client.get(f"/api/v1/predict/batch/{job}{suffix}").status_code == 200


def test_results_csv_neutralises_formulas(stack: tuple[Settings, httpx.Client]) -> None:
    """Item 4: echoed text cells and header names starting = + - @ tab CR get a leading `'`;
    numbers (a negative extra column, the features, our scores) stay numbers."""
    _, client = stack
    data = (
        b"loan_id,=cmd,delta,Employed,Bank Balance,Annual Salary\n"
        b'"=HYPERLINK(""http://x"",""y"")",a,-1.5,1,100,50000\n'
        b"+1+1,b,-2,0,5,9000\n"
        b"-2+3,c,3,1,7,1000\n"
        b"@SUM(A1),d,4,1,7,1000\n"
        b'"\tx",e,5,1,7,1000\n'
        b'"\rx",f,6,1,7,1000\n'
        b"plain,g,7,1,7,1000\n"
    )
    r = client.post("/api/v1/predict/batch/file", files={"file": ("f.csv", data, "text/csv")})
    assert r.status_code == 202, r.text
    job = r.json()["data"]["job_id"]
    assert wait_job(client, job)["status"] == "SUCCESS"
    text = client.get(f"/api/v1/predict/batch/{job}/results.csv").text
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0][:3] == ["loan_id", "'=cmd", "delta"]
    assert [r[0] for r in rows[1:]] == [
        '\'=HYPERLINK("http://x","y")',
        "'+1+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "plain",
    ]
    assert [float(r[2]) for r in rows[1:]] == [-1.5, -2, 3, 4, 5, 6, 7]
    assert all(r[0][:1] not in "=+-@\t\r" for r in rows)


@pytest.mark.parametrize(
    ("field", "cell"),
    [
        ("employed", "1.0"),
        ("employed", "0x1"),
        ("bank_balance", "0x10"),
        ("annual_salary", "5000."),
    ],
)
def test_csv_cells_follow_the_json_contract(
    stack: tuple[Settings, httpx.Client], field: str, cell: str
) -> None:
    """Item 11: what JSON refuses the CSV path refuses, naming the same field."""
    settings, client = stack
    row = {"employed": "1", "bank_balance": "100", "annual_salary": "5000"} | {field: cell}
    data = f"employed,bank_balance,annual_salary\n{','.join(row.values())}\n".encode()
    before = _job_keys(settings)
    r = client.post("/api/v1/predict/batch/file", files={"file": ("f.csv", data, "text/csv")})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["detail"]["rows"]] == [field]
    as_json = "{" + ",".join(f'"{k}": {v}' for k, v in row.items()) + "}"
    single = client.post(
        "/api/v1/predict", content=as_json, headers={"content-type": "application/json"}
    )
    assert single.status_code == 422
    assert _job_keys(settings) == before


def test_repeated_keys_in_a_batch_item_are_refused(stack: tuple[Settings, httpx.Client]) -> None:
    """Item 11: `{"employed": 1, ..., "employed": 0}` was scored on the last value silently."""
    settings, client = stack
    before = _job_keys(settings)
    good = '{"employed": 1, "bank_balance": 5, "annual_salary": 100}'
    for dup in (
        '{"employed": 1, "bank_balance": 5, "annual_salary": 100, "employed": 0}',
        '{"employed": 1, "bank_balance": 5, "annual_salary": 100, "employ\\u0065d": 0}',
    ):
        body = '{"predictions": [' + good + "," + dup + "]}"
        r = client.post(
            "/api/v1/predict/batch", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "predictions", 1, "employed"]
        assert r.json()["detail"][0]["type"] == "duplicate_key"
    # `reference`: the one text field an item may carry (unknown fields are refused, issue 13)
    note = '{"employed": 1, "bank_balance": 5, "annual_salary": 100, "reference": "employed"}'
    r = client.post(
        "/api/v1/predict/batch",
        content='{"predictions": [' + note + "]}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 202, r.text  # the name inside a value is not a key
    assert _job_keys(settings) == before + 1


def test_batch_errors_are_capped(stack: tuple[Settings, httpx.Client]) -> None:
    """Item 1: at most BATCH_MAX_REPORTED_ERRORS errors are listed, then one summary entry."""
    settings, client = stack
    r = client.post("/api/v1/predict/batch", json={"predictions": [{}] * 1000})
    assert r.status_code == 422
    detail = r.json()["detail"]
    cap = settings.batch_max_reported_errors
    assert len(detail) == cap + 1
    assert detail[-1]["type"] == "too_many_errors"
    assert detail[-1]["msg"].startswith(f"{3000 - cap} more errors")
    assert len(r.content) < 50_000
