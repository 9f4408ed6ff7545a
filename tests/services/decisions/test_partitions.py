"""PostgreSQL monthly partitions: made ahead, made on demand, dropped whole for retention."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from loan_default.services.decisions import DecisionStore, partitions
from tests.services.decisions.conftest import make_record


@pytest.mark.unit
@pytest.mark.parametrize(
    ("moment", "months", "expected"),
    [
        (datetime(2026, 3, 31, 8, tzinfo=UTC), -1, datetime(2026, 2, 28, 8, tzinfo=UTC)),
        (datetime(2024, 3, 31, tzinfo=UTC), -1, datetime(2024, 2, 29, tzinfo=UTC)),
        (datetime(2026, 1, 15, tzinfo=UTC), -25, datetime(2023, 12, 15, tzinfo=UTC)),
        (datetime(2026, 11, 30, tzinfo=UTC), 3, datetime(2027, 2, 28, tzinfo=UTC)),
        (datetime(2026, 12, 1, tzinfo=UTC), 1, datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_calendar_months(moment: datetime, months: int, expected: datetime) -> None:
    assert partitions.add_months(moment, months) == expected


@pytest.mark.unit
def test_retention_cutoff_is_25_calendar_months_back() -> None:
    now = datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert partitions.retention_cutoff(25, now) == datetime(2024, 10, 27, 10, tzinfo=UTC)
    assert partitions.month_start(now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert partitions.partition_name(now) == "decisions_p202611"


@pytest.fixture
def pg_store(pg_database: tuple[str, str]) -> DecisionStore:
    store = DecisionStore.from_url(pg_database[0])
    yield store  # type: ignore[misc]
    store.close()


@pytest.mark.integration
def test_partitions_are_made_ahead_idempotently(pg_store: DecisionStore) -> None:
    now = datetime(2030, 11, 2, tzinfo=UTC)
    made = partitions.ensure_partitions(pg_store.engine, 2, now=now)
    assert made == ["decisions_p203011", "decisions_p203012", "decisions_p203101"]
    assert partitions.ensure_partitions(pg_store.engine, 2, now=now) == []
    with pg_store.engine.connect() as conn:
        bound = conn.execute(
            sa.text("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = :n"),
            {"n": "decisions_p203012"},
        ).scalar_one()
    assert "2030-12-01 00:00:00+00" in bound
    assert "2031-01-01 00:00:00+00" in bound


@pytest.mark.integration
def test_purge_drops_whole_partitions_and_deletes_no_row_elsewhere(pg_store: DecisionStore) -> None:
    def at(y: int, m: int, d: int) -> datetime:
        return datetime(y, m, d, 12, tzinfo=UTC)

    recs = [make_record(i, at=at(2024, 1 + i % 3, 1 + i)) for i in range(9)]  # Jan, Feb, Mar
    assert pg_store.record_many(recs) == 9
    names = partitions.list_partitions(pg_store.engine)
    assert {"decisions_p202401", "decisions_p202402", "decisions_p202403"} <= set(names)
    # the cutoff falls inside February: January goes, February stays whole
    assert pg_store.purge(at(2024, 2, 20)) == 3
    names = partitions.list_partitions(pg_store.engine)
    assert "decisions_p202401" not in names
    assert "decisions_p202402" in names
    left = [r.decision_id for r in pg_store.query(end=at(2024, 4, 1))[0]]
    assert left == sorted(r.decision_id for r in recs if r.decided_at.month > 1)
    assert pg_store.purge(at(2024, 2, 20)) == 0


@pytest.mark.integration
def test_the_writer_keeps_partitions_ahead(pg_database: tuple[str, str]) -> None:
    store = DecisionStore.from_url(pg_database[0])
    try:
        with store.engine.begin() as conn:
            for name in partitions.list_partitions(store.engine):
                conn.execute(sa.text(f'DROP TABLE "{name}"'))
        store._writer._next_maintenance = 0.0  # as if an hour had passed
        rec = make_record(1, at=datetime.now(UTC) - timedelta(seconds=1))
        store.record_sync(rec)  # made on demand (no partition), then maintenance runs
        deadline = time.monotonic() + 5
        while len(partitions.list_partitions(store.engine)) < 3:
            assert time.monotonic() < deadline, "maintenance made no partitions ahead"
            time.sleep(0.05)
        assert store.get(rec.decision_id) == rec
    finally:
        store.close()
