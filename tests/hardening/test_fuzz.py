"""Schemathesis over every operation of the live server's /openapi.json, with and without a key."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.api.conftest import GOOD, Server, running, store_env
from tests.conftest import TEST_API_KEY
from tests.hardening.fuzz import fuzz, fuzz_query, fuzz_stateful

pytestmark = pytest.mark.integration

#: Examples per operation, per generation mode (positive, negative) and per key mode: about
#: 1,000 requests in all, ~1 min here. FUZZ_EXAMPLES raises it for a longer local run.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def fuzz_server(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("fuzz")
    # a broker queue nobody consumes: submits are accepted (202) and queued, no worker needed
    env = store_env(trained_store, rate_limit_per_minute=1_000_000, batch_max_rows=50)
    with running(env, work) as server:
        yield server


def test_openapi_contract_fuzz(fuzz_server: Server) -> None:
    report = fuzz(fuzz_server.url, api_key=TEST_API_KEY, max_examples=MAX_EXAMPLES)
    print(f"\nschemathesis: {report.summary()}")
    for op, n in sorted(report.per_operation.items()):
        print(f"  {op}: {n} requests")
    print(f"  keyless /api/v1 statuses: {dict(report.keyless_api)}")
    assert len(report.operations) >= 10, report.operations
    # every operation was exercised, the ones with inputs by many cases
    assert all(report.per_operation[op] > 0 for op in report.operations)
    assert report.per_operation["POST /api/v1/predict"] >= 2 * MAX_EXAMPLES
    assert not report.failures, "\n\n".join(report.failures[:10])
    assert not [s for s in report.by_status if s >= 500]
    # both kinds of answers were reached: accepted requests and refusals
    assert report.by_status[200] > 0
    assert report.by_status[202] > 0
    assert report.by_status[422] > 0
    # without a key nothing under /api/v1 is served, whatever the rest of the request is
    assert set(report.keyless_api) == {401}
    # found by the CSV property test: a header that is not UTF-8 was a 500
    r = httpx.post(
        f"{fuzz_server.url}/api/v1/predict/batch/file",
        files={"file": ("x.csv", b"\x80mployed,Bank Balance,Annual Salary\n1,2,3\n", "text/csv")},
        headers={"X-API-Key": TEST_API_KEY},
    )
    assert r.status_code == 422, r.text
    assert r.json()["message"] == "the file is not a readable CSV"
    logs = fuzz_server.logs()
    assert "Traceback" not in logs
    assert "unhandled error" not in logs


def test_stateful_fuzz_follows_links_to_real_jobs(fuzz_server: Server) -> None:
    """Submit -> status / results.csv of that job, through the 202's OpenAPI links."""
    report = fuzz_stateful(fuzz_server.url, api_key=TEST_API_KEY, max_examples=MAX_EXAMPLES)
    print(f"\nschemathesis stateful: {report.summary()}")
    for op, n in sorted(report.linked.items()):
        print(f"  linked {op}: {n}")
    assert not report.failures, "\n\n".join(report.failures[:10])
    assert not [s for s in report.by_status if s >= 500]
    assert report.scenarios >= MAX_EXAMPLES
    # the links were followed with real job ids: the status of a submitted job was answered
    assert report.linked["GET /api/v1/predict/batch/{job_id} -> 200"] > 0, report.linked
    assert "Traceback" not in fuzz_server.logs()


def test_query_strings_of_every_route(fuzz_server: Server) -> None:
    """Issue 11: the probe found 500s in query handling that the schema-driven fuzz never sent
    (it only sends declared parameters). Every route, generated query strings, valid requests
    otherwise: no 5xx, and every refusal is the JSON error envelope."""
    keyed = {"X-API-Key": TEST_API_KEY}
    submitted = httpx.post(
        f"{fuzz_server.url}/api/v1/predict/batch",
        json={"predictions": [GOOD, GOOD]},
        headers=keyed,
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["data"]["job_id"]
    boundary = "fuzzboundary"
    upload = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.csv"\r\n'
        "Content-Type: text/csv\r\n\r\nemployed,bank_balance,annual_salary\n1,2.0,30000\n"
        f"\r\n--{boundary}--\r\n"
    ).encode()
    report = fuzz_query(
        fuzz_server.url,
        api_key=TEST_API_KEY,
        max_examples=MAX_EXAMPLES,
        bodies={
            "POST /api/v1/predict": (orjson.dumps(GOOD), "application/json"),
            "POST /api/v1/predict/batch": (
                orjson.dumps({"predictions": [GOOD]}),
                "application/json",
            ),
            "POST /api/v1/predict/batch/file": (
                upload,
                f"multipart/form-data; boundary={boundary}",
            ),
        },
        path_values={"job_id": job_id},
    )
    print(f"\nquery fuzz: {report.summary()}")
    assert len(report.per_route) >= 10, report.per_route
    assert not report.failures, "\n".join(report.failures[:10])
    # requests got through to the handlers (not all refused before query handling)
    assert report.by_status[200] > 0
    assert report.by_status[422] > 0
    logs = fuzz_server.logs()
    assert "Traceback" not in logs
