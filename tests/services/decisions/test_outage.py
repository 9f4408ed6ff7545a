"""Store down -> DecisionStoreUnavailable (never a hang or a raw driver error); back up ->
recording resumes in the same store object, without a restart.

"Down" is made real on both back ends: SQLite is locked by another writer for longer than the
busy timeout (what a long transaction, a backup or a stuck process does); PostgreSQL refuses
connections to the database (`ALLOW_CONNECTIONS false`) and its sessions are terminated, as a
restart or failover does to the clients.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from loan_default.services.decisions import DecisionStore, DecisionStoreUnavailable
from loan_default.services.decisions.engines import sqlite_path
from tests.services.decisions.conftest import make_batch, make_record, now_ms, pg_admin

pytestmark = pytest.mark.integration


@contextmanager
def sqlite_locked(store: DecisionStore) -> Iterator[None]:
    other = sqlite3.connect(sqlite_path(store.engine), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def pg_refusing(name: str) -> Callable[[DecisionStore], AbstractContextManager[None]]:
    @contextmanager
    def down(store: DecisionStore) -> Iterator[None]:
        admin = pg_admin()
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
        try:
            yield
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            admin.dispose()

    return down


@pytest.fixture
def outage(
    store: DecisionStore, request: pytest.FixtureRequest
) -> Callable[[DecisionStore], AbstractContextManager[None]]:
    if store.type == "sqlite":
        return sqlite_locked
    _, name = request.getfixturevalue("pg_database")
    return pg_refusing(name)


def test_down_is_unavailable_then_recording_resumes(
    store: DecisionStore, outage: Callable[[DecisionStore], AbstractContextManager[None]]
) -> None:
    before = make_record(0)
    store.record_sync(before)
    with outage(store):
        t0 = time.monotonic()
        with pytest.raises(DecisionStoreUnavailable):
            asyncio.run(store.record(make_record(1)))
        with pytest.raises(DecisionStoreUnavailable):
            store.record_sync(make_record(2))
        with pytest.raises(DecisionStoreUnavailable):
            store.record_batch(make_batch("job-down", now_ms(), 0, 10))
        assert time.monotonic() - t0 < 5  # bounded by the busy / connect timeouts
        assert store.status() == {"type": store.type, "status": "unavailable"}
        if store.type == "postgresql":
            with pytest.raises(DecisionStoreUnavailable):
                store.get(before.decision_id)
    # back up: the same store object records again (the probe ends the writer's back-off)
    assert store.status()["status"] == "ok"
    after = make_record(3)
    asyncio.run(store.record(after))
    store.record_sync(make_record(4))
    assert store.record_batch(make_batch("job-up", now_ms(), 0, 10)) == 10
    assert store.get(after.decision_id) == after
    assert store.get(before.decision_id) == before
    assert store.stats()["failed_records"] >= 2


def test_recovery_needs_no_probe(
    store: DecisionStore, outage: Callable[[DecisionStore], AbstractContextManager[None]]
) -> None:
    """Without /readyz calling `status`, the writer's back-off alone brings recording back."""
    with outage(store), pytest.raises(DecisionStoreUnavailable):
        store.record_sync(make_record(1))
    deadline = time.monotonic() + 5
    while True:
        try:
            store.record_sync(make_record(2))
            return
        except DecisionStoreUnavailable:
            assert time.monotonic() < deadline, "recording did not resume"
            time.sleep(0.1)


def test_a_store_that_cannot_be_reached_at_start_is_unavailable(tmp_path: Path) -> None:
    """Start-up (migrations) against a store that is not there: the same clear error, fast."""
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(DecisionStoreUnavailable):
        DecisionStore.from_url(f"sqlite:///{tmp_path / 'a-file' / 'decisions.db'}")
    t0 = time.monotonic()
    with pytest.raises(DecisionStoreUnavailable):
        DecisionStore.from_url("postgresql://postgres@127.0.0.1:1/nothing-listens-here")
    assert time.monotonic() - t0 < 10
    with pytest.raises(ValueError, match="DECISION_STORE_URL"):
        DecisionStore.from_url("mysql://x@y/z")
