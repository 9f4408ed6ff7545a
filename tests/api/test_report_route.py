"""The monitoring report over HTTP (`GET /api/v1/monitoring/report`) and from the command line
(`loan-default report --out`): the same page, the PSI against the served model's card, the
`audit` scope, input errors and the documented statuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from loan_default.cli import main as cli_main
from loan_default.services import report as report_service
from tests.api.test_decisions import _client, _headers
from tests.conftest import TEST_API_KEY, make_settings
from tests.services.report.conftest import seed

pytestmark = pytest.mark.integration

AUDITOR = "auditor-" + "5" * 16
ROUTE = "/api/v1/monitoring/report"
WINDOW = {"from": "2026-01-01", "to": "2026-07-01"}


@pytest.fixture(scope="module")
def seeded(
    trained_store: Path, bundle: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Path]]:
    db = tmp_path_factory.mktemp("report-route") / "decisions.db"
    settings = make_settings(
        trained_store,
        api_keys=f"{TEST_API_KEY},{AUDITOR}:audit",
        decision_store_url=f"sqlite:///{db}",
        rate_limit_per_minute=100_000,
    )
    with _client(settings, bundle) as client:
        seed(client.app.state.decisions.store, n=2_400)  # type: ignore[attr-defined]
        yield client, db


def test_the_report_page(seeded: tuple[TestClient, Path], bundle: Any) -> None:
    client, _ = seeded
    r = client.get(ROUTE, params=WINDOW, headers=_headers(AUDITOR))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    for chart_id in report_service.CHART_IDS:
        assert f'id="{chart_id}"' in r.text
    assert f"v{bundle.version}&#x27;s model card" in r.text  # the served model's histograms
    assert "2,400 decisions" in r.text


def test_scope_and_input_errors(seeded: tuple[TestClient, Path]) -> None:
    client, _ = seeded
    r = client.get(ROUTE, headers=_headers(TEST_API_KEY))
    assert r.status_code == 403
    assert "audit" in r.json()["message"]
    r = client.get(ROUTE, params={"from": "925"}, headers=_headers(AUDITOR))
    assert r.status_code == 422
    assert "from" in r.json()["message"]
    r = client.get(ROUTE, params={"from": "2026-02-01", "to": "2026-01-01"},
                   headers=_headers(AUDITOR))  # fmt: skip
    assert r.status_code == 422
    assert "before" in r.json()["message"]


@pytest.mark.parametrize(
    "window",
    [
        {"to": "0001-01-02"},
        {"from": "0001-01-01", "to": "0001-01-02"},
        {"from": "9999-12-30", "to": "9999-12-31T23:59:59+00:00"},
        {"from": "2026-12-31T00:00:00-14:00", "to": "2027-01-01"},
    ],
)
def test_windows_at_the_ends_of_time_are_empty_pages(
    seeded: tuple[TestClient, Path], window: dict[str, str]
) -> None:
    client, _ = seeded
    r = client.get(ROUTE, params=window, headers=_headers(AUDITOR))
    assert r.status_code == 200, r.text
    assert "no decisions in this window" in r.text


def test_openapi_documents_html_and_the_error_envelopes(seeded: tuple[TestClient, Path]) -> None:
    client, _ = seeded
    op = client.get("/openapi.json").json()["paths"][ROUTE]["get"]
    assert "text/html" in op["responses"]["200"]["content"]
    for status in ("403", "422", "503"):
        schema = op["responses"][status]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/ErrorEnvelope")
    assert {p["name"] for p in op["parameters"]} == {"from", "to"}


def test_without_a_decision_record_it_is_a_503(trained_store: Path, bundle: Any) -> None:
    settings = make_settings(
        trained_store, api_keys=f"{TEST_API_KEY},{AUDITOR}:audit", decision_recording="off"
    )
    with _client(settings, bundle) as client:
        r = client.get(ROUTE, headers=_headers(AUDITOR))
    assert r.status_code == 503
    assert r.json()["success"] is False


def test_the_cli_writes_the_same_page(
    seeded: tuple[TestClient, Path],
    trained_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, db = seeded
    settings = make_settings(trained_store, decision_store_url=f"sqlite:///{db}")
    for name, value in settings.model_dump().items():
        if value is not None and not isinstance(value, (dict, list)):
            monkeypatch.setenv(name.upper(), str(value))
    out = tmp_path / "report.html"
    argv = ["report", "--out", str(out), "--from", WINDOW["from"], "--to", WINDOW["to"]]
    assert cli_main(argv) == 0
    assert f"report written to {out}" in capsys.readouterr().out
    page = out.read_text()
    served = client.get(ROUTE, params=WINDOW, headers=_headers(AUDITOR)).text

    def body(html: str) -> str:  # all but the "Generated <time>" line
        return html.split("<section>", 1)[1]

    assert body(page) == body(served)  # the registry's production card is the served one
    assert (
        cli_main(["report", "--out", str(out), "--from", "2026-02-01", "--to", "2026-01-01"]) == 2
    )
