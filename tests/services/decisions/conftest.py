"""Decision-store fixtures: the same tests run on SQLite (a file in tmp_path) and PostgreSQL (a
database of their own on 127.0.0.1:5432, dropped afterwards; skipped when nothing answers)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from loan_default.services.decisions import (
    DecisionBatch,
    DecisionRecord,
    DecisionStore,
    decided_at_of,
    new_decision_id,
)

PG_ADMIN_URL = os.environ.get(
    "DECISION_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
KEY_A, KEY_B = "a" * 16, "b" * 16


def pg_admin() -> sa.Engine:
    return sa.create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )


def pg_available() -> str | None:
    """None when PostgreSQL answers, else why not (the skip reason)."""
    engine = pg_admin()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        return f"PostgreSQL does not answer at {PG_ADMIN_URL}: {type(exc.orig).__name__}"
    finally:
        engine.dispose()
    return None


@pytest.fixture
def pg_database() -> Iterator[tuple[str, str]]:
    """(url, name) of a fresh database `dec_<hex>`; dropped (with its sessions) afterwards."""
    reason = pg_available()
    if reason:
        pytest.skip(reason)
    name = f"dec_{uuid.uuid4().hex[:12]}"
    admin = pg_admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        url = sa.make_url(PG_ADMIN_URL).set(database=name)
        yield url.render_as_string(hide_password=False), name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'decisions.db'}"
    url, _ = request.getfixturevalue("pg_database")
    return str(url)


@pytest.fixture
def store(store_url: str) -> Iterator[DecisionStore]:
    s = DecisionStore.from_url(store_url, busy_timeout_s=0.5, record_timeout_s=5)
    try:
        yield s
    finally:
        s.close()


def make_record(i: int = 0, *, at: datetime | None = None, **changes: Any) -> DecisionRecord:
    """A predict decision with every field set (floats that do not print short)."""
    did = new_decision_id(at)
    values: dict[str, Any] = {
        "decision_id": did,
        "decided_at": decided_at_of(did),
        "request_id": uuid.uuid4().hex,
        "key_id": KEY_A,
        "reference": f"app-{i}",
        "source": "predict",
        "job_id": None,
        "row": None,
        "employed": float(i % 2),
        "bank_balance": 1234.5678 + i / 7,
        "annual_salary": 45_000.0 + i / 3,
        "saving_rate": (1234.5678 + i / 7) / (45_000.0 + i / 3),
        "model_name": "loan-default",
        "model_version": str(1 + i % 3),
        "model_alias": "production",
        "probability": 0.1 + 0.2 + i * 1e-17,
        "threshold": 1 / 3,
        "prediction": i % 2,
        "risk_band": ("Low", "Medium", "High")[i % 3],
        "reason_codes": ("BAL_HIGH", "SR_HIGH") if i % 2 else (),
        "challenger_version": "9" if i % 4 == 0 else None,
        "challenger_probability": 0.123456789012345 if i % 4 == 0 else None,
    }
    values.update(changes)
    return DecisionRecord(**values)


def make_batch(
    job_id: str, created: datetime, start: int, n: int, *, key_id: str = KEY_A
) -> DecisionBatch:
    i = np.arange(start, start + n, dtype=np.int64)
    adverse = (i % 5 == 0).astype(np.int8)
    return DecisionBatch(
        job_id=job_id,
        created_at=created,
        key_id=key_id,
        model_name="loan-default",
        model_version="4",
        model_alias="production",
        threshold=0.42,
        rows=i,
        employed=(i % 2).astype(np.float64),
        bank_balance=100.0 + i / 7,
        annual_salary=20_000.0 + i / 3,
        saving_rate=(100.0 + i / 7) / (20_000.0 + i / 3),
        probability=(i % 97) / 97,
        prediction=adverse,
        risk_band=["High" if a else "Low" for a in adverse],
        reason_codes=[("BAL_HIGH",) if a else () for a in adverse],
        references=[f"loan-{r}" if r % 3 else None for r in i.tolist()],
    )


def now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
