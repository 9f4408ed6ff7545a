"""Replay and the auditor's CLI against a real MLflow store and a real decision store."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from loan_default.cli import main as cli_main
from loan_default.core.config import Settings
from loan_default.registry.client import Registry
from loan_default.services.decisions import DecisionStore
from loan_default.services.decisions.recorder import DecisionRecorder
from loan_default.services.decisions.replay import VersionCache, replay
from loan_default.services.model import ModelService
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def recorded(
    trained_store: Path, bundle: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, list[str]]:
    """1,000 random applicants predicted and recorded as the API records them."""
    db = tmp_path_factory.mktemp("replay") / "decisions.db"
    settings = make_settings(trained_store, decision_store_url=f"sqlite:///{db}")
    service = ModelService(settings=settings, bundle=bundle)
    recorder = DecisionRecorder(DecisionStore.from_settings(settings), "required")
    rng = np.random.default_rng(13)

    async def run() -> list[str]:
        ids = []
        for i in range(1000):
            result = service.predict_one(
                employed=int(rng.integers(0, 2)),
                bank_balance=float(rng.uniform(0, 40_000)),
                annual_salary=float(rng.uniform(1, 900_000)),
                explain=bool(i % 10 == 0),
            )
            decision_id = await recorder.record_prediction(
                result, key_id="k" * 16, request_id=f"r{i}", reference=f"APP-{i}"
            )
            assert decision_id is not None
            ids.append(decision_id)
        return ids

    ids = asyncio.run(run())
    recorder.close()
    return settings, ids


def test_replay_reproduces_1000_recorded_decisions_exactly(
    recorded: tuple[Settings, list[str]],
) -> None:
    settings, ids = recorded
    registry = Registry(settings)
    versions = VersionCache(registry.load_bundle)
    with DecisionStore.from_settings(settings) as store:
        records = [store.get(i) for i in ids]
    assert all(r is not None for r in records)
    results = [replay(r, versions.get(r.model_version)) for r in records if r is not None]
    assert all(x.identical for x in results), [x.as_dict() for x in results if not x.identical][:3]
    assert sum(x.prediction for x in results) > 0  # adverse ones, with codes, among them
    assert any(x.reason_codes for x in results)


def test_cli_replay_export_and_purge(
    recorded: tuple[Settings, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    settings, ids = recorded
    for key, value in {
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "MLFLOW_ARTIFACT_ROOT": settings.mlflow_artifact_root,
        "DECISION_STORE_URL": settings.decision_store_url,
        "API_KEYS": "k",
        "ENVIRONMENT": "test",
    }.items():
        monkeypatch.setenv(key, value)
    assert cli_main(["decisions", "replay", ids[3]]) == 0
    assert '"identical": true' in capsys.readouterr().out
    assert cli_main(["decisions", "replay", "not-an-id"]) == 2
    assert cli_main(["decisions", "replay", "0" * 8 + ids[3][8:]]) == 1
    start = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    end = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    out_csv, out_pq = tmp_path / "d.csv", tmp_path / "d.parquet"
    assert (
        cli_main(["decisions", "export", "--from", start, "--to", end, "--out", str(out_csv)]) == 0
    )
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 1000
    assert [r["decision_id"] for r in rows] == sorted(ids)  # time order (ids begin with it)
    assert (
        cli_main(["decisions", "export", "--from", start, "--to", end, "--out", str(out_pq)]) == 0
    )
    table = pq.read_table(out_pq)
    assert table.num_rows == 1000
    assert table.column("probability").to_pylist()[:5] == [
        float(r["probability"]) for r in rows[:5]
    ]
    with pytest.raises(SystemExit) as bad:
        cli_main(["decisions", "export", "--from", "yesterday", "--to", end, "--out", "x.csv"])
    assert bad.value.code == 2
    assert "not an ISO 8601 date" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["decisions", "export", "--from", start, "--to", end, "--out", "x.xlsx"])
    assert ".csv or .parquet" in capsys.readouterr().err
    assert cli_main(["decisions", "purge"]) == 0  # nothing is 25 months old
    assert "purged 0 decision(s)" in capsys.readouterr().out
    assert cli_main(["decisions", "migrate"]) == 0
