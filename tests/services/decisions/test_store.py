"""One suite, both stores: what goes in comes back, once, in order, and survives an outage."""

from __future__ import annotations

import asyncio
import csv
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg2  # type: ignore[import-untyped]
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from loan_default.services.decisions import (
    DecisionRecord,
    DecisionStore,
    DecisionStoreUnavailable,
    InvalidCursor,
    batch_decision_id,
)
from tests.services.decisions.conftest import KEY_A, KEY_B, make_batch, make_record, now_ms

pytestmark = pytest.mark.integration


def count(store: DecisionStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM decisions")).scalar_one())


def test_every_field_round_trips_exactly(store: DecisionStore) -> None:
    recs = [make_record(i) for i in range(8)]
    asyncio.run(store.record(recs[0]))
    store.record_sync(recs[1])
    assert store.record_many(recs[2:]) == 6
    for rec in recs:
        got = store.get(rec.decision_id)
        assert got == rec  # every field, floats bit for bit
        assert got is not None
        assert got.decided_at.tzinfo == UTC
    assert store.get(recs[0].decision_id.upper()) == recs[0]
    assert store.get(make_record().decision_id) is None
    assert store.get("not-a-decision-id") is None


def test_text_that_needs_quoting_round_trips_through_the_group_write(
    store: DecisionStore,
) -> None:
    """The group commit binds its records as one JSON parameter on PostgreSQL and as row values
    on SQLite: quotes, backslashes, JSON syntax and non-ASCII text come back as they went in,
    and a tiny or huge float keeps every bit."""
    texts = [
        'O\'Brien \\ "quoted" ); DROP TABLE decisions; --',
        '{"a": [1, null]}',
        "é ü 名 \U0001f600",
    ]
    recs = [
        make_record(
            i,
            request_id=text,
            key_id=f"key-{text}",
            model_version=text,
            bank_balance=5e-324 if i == 0 else 1.7976931348623157e308,
        )
        for i, text in enumerate(texts)
    ]

    async def record_all() -> None:
        await asyncio.gather(*(store.record(rec) for rec in recs))

    asyncio.run(record_all())
    for rec in recs:
        assert store.get(rec.decision_id) == rec


def test_batch_rows_round_trip_and_match_their_records(store: DecisionStore) -> None:
    created = now_ms()
    batch = make_batch("job-rt", created, 0, 300)
    assert store.record_batch(batch) == 300
    for rec in batch.records()[::37]:
        assert store.get(rec.decision_id) == rec
    assert store.get(batch_decision_id("job-rt", 299, created)) is not None


def test_writes_are_idempotent(store: DecisionStore) -> None:
    recs = [make_record(i) for i in range(10)]
    store.record_sync(recs[0])
    store.record_sync(recs[0])
    assert store.record_many(recs[:5]) == 4
    assert store.record_many(recs[:5]) == 0
    assert store.record_many(recs[3:] + recs[3:4]) == 5  # overlapping, and a repeat in one call
    batch = make_batch("job-idem", now_ms(), 0, 1000)
    assert store.record_batch(batch) == 1000
    assert store.record_batch(batch) == 0  # a redelivered chunk writes nothing
    assert store.record_many(batch.records()[990:]) == 0
    assert count(store) == 1010


def test_concurrent_redeliveries_write_each_row_once(store: DecisionStore) -> None:
    batch = make_batch("job-race", now_ms(), 0, 2000)
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(store.record_batch(batch))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 2000
    assert count(store) == 2000


def test_concurrent_records_share_commits(store: DecisionStore) -> None:
    before = store.stats()["commits"]

    async def main() -> None:
        await asyncio.gather(*(store.record(make_record(i)) for i in range(200)))

    asyncio.run(main())
    commits = store.stats()["commits"] - before
    assert count(store) == 200
    assert commits <= 20, f"200 concurrent records took {commits} commits"


def test_a_group_over_one_statement_is_written_whole_or_not_at_all(store: DecisionStore) -> None:
    """The writer's group is one autocommit statement; past SQLite's rows per statement it is
    several inside one transaction. A bad row anywhere leaves none of the group behind, and the
    writer's connection works for the next group."""
    from loan_default.services.decisions.codec import SQLITE_ROWS_PER_INSERT

    n = SQLITE_ROWS_PER_INSERT * 2 + 7
    group = [make_record(i) for i in range(n)]
    bad = make_record(n)
    object.__setattr__(bad, "key_id", None)  # NOT NULL: the database refuses it
    with pytest.raises((sqlite3.IntegrityError, psycopg2.IntegrityError)):
        store._writes.group([*group, bad])
    assert count(store) == 0
    store._writes.group(group)
    assert count(store) == n
    store._writes.group(group)  # a repeat writes nothing twice
    assert count(store) == n


def _seed(store: DecisionStore) -> list[DecisionRecord]:
    base = now_ms() - timedelta(hours=1)
    recs = [
        make_record(i, at=base + timedelta(seconds=i), key_id=KEY_B if i % 5 == 0 else KEY_A)
        for i in range(60)
    ]
    store.record_many(recs[::-1])  # insertion order must not matter
    return recs


def test_queries_filter_and_order_by_time(store: DecisionStore) -> None:
    recs = _seed(store)
    page, cursor = store.query(limit=1000)
    assert page == recs
    assert cursor is None
    assert store.query(reference="app-7")[0] == [recs[7]]
    assert store.query(reference="nope")[0] == []
    assert store.query(model_version="2")[0] == [r for r in recs if r.model_version == "2"]
    assert store.query(key_id=KEY_B)[0] == [r for r in recs if r.key_id == KEY_B]
    start, end = recs[10].decided_at, recs[20].decided_at
    assert store.query(start=start, end=end)[0] == recs[10:20]  # start in, end out
    assert store.query(start=start + timedelta(microseconds=1))[0] == recs[11:]
    assert store.query(end=end - timedelta(microseconds=1))[0] == recs[:20]
    both = store.query(key_id=KEY_B, model_version="1", start=start)[0]
    assert both == [r for r in recs[10:] if r.key_id == KEY_B and r.model_version == "1"]


def test_paging_visits_every_row_exactly_once(store: DecisionStore) -> None:
    recs = _seed(store)
    seen: list[DecisionRecord] = []
    cursor = None
    while True:
        page, cursor = store.query(key_id=KEY_A, cursor=cursor, limit=7)
        seen += page
        if cursor is None:
            break
    assert seen == [r for r in recs if r.key_id == KEY_A]
    assert (
        list(store.iter_range(recs[0].decided_at, recs[-1].decided_at, batch_size=8)) == recs[:-1]
    )
    with pytest.raises(InvalidCursor):
        store.query(cursor="not-a-cursor")
    with pytest.raises(InvalidCursor):
        store.query(cursor="ZDE6eHl6")  # tag right, id wrong


def test_export_csv_and_parquet(store: DecisionStore, tmp_path: Path) -> None:
    recs = _seed(store)
    evil = make_record(99, reference="=HYPERLINK(1)")
    store.record_sync(evil)
    start, end = recs[0].decided_at, evil.decided_at + timedelta(seconds=1)
    expected = [*recs, evil]

    assert store.export(start, end, tmp_path / "out.parquet") == 61
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    for row, rec in zip(table, expected, strict=True):
        assert row["decided_at"] == rec.decided_at
        assert row["reason_codes"] == list(rec.reason_codes)
        assert row["probability"] == rec.probability
        assert row["reference"] == rec.reference

    assert store.export(start, end, tmp_path / "out.csv") == 61
    with (tmp_path / "out.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row, rec in zip(rows, expected, strict=True):
        want = rec.as_dict()
        assert row["decision_id"] == rec.decision_id
        assert row["decided_at"] == want["decided_at"]
        assert float(row["probability"]) == rec.probability
        assert float(row["saving_rate"]) == rec.saving_rate
        assert orjson.loads(row["reason_codes"]) == want["reason_codes"]
    assert rows[-1]["reference"] == "'=HYPERLINK(1)"  # formula-escaped for spreadsheets
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(ValueError, match=r"csv or \.parquet"):
        store.export(start, end, tmp_path / "out.xlsx")


def test_purge_removes_what_is_past_retention(store: DecisionStore) -> None:
    old = [
        make_record(i, at=datetime(2023, 1, 15, tzinfo=UTC) + timedelta(days=i)) for i in range(3)
    ]
    new = [make_record(i) for i in range(3)]
    store.record_many(old + new)  # PostgreSQL makes the 2023 partitions on demand
    assert store.purge(datetime(2023, 1, 10, tzinfo=UTC)) == 0
    assert store.purge(datetime(2023, 3, 1, tzinfo=UTC)) == 3
    assert [r.decision_id for r in store.query()[0]] == [r.decision_id for r in new]


def test_status_says_ok_or_unavailable_and_nothing_more(store_url: str) -> None:
    store = DecisionStore.from_url(store_url)
    assert store.status() == {"type": store.type, "status": "ok"}  # probed: nothing written yet
    store.record_sync(make_record(1))
    assert store.status() == {"type": store.type, "status": "ok"}  # the commit vouches for it
    store.close()
    assert store.status() == {"type": store.type, "status": "unavailable"}
    with pytest.raises(DecisionStoreUnavailable, match="closed"):
        store.record_sync(make_record(2))


def test_a_record_outside_existing_partitions_is_still_written(store: DecisionStore) -> None:
    far = make_record(1, at=datetime(2031, 7, 4, 12, tzinfo=UTC))
    asyncio.run(store.record(far))
    assert store.get(far.decision_id) == far


def test_id_floor_before_the_epoch_is_the_zero_id() -> None:
    """Ids count ms from 1970: earlier moments (down to `datetime.min`, which a query window
    may reach) floor to the zero id instead of overflowing."""
    from loan_default.services.decisions.queries import id_floor

    zero = "00000000-0000-0000-0000-000000000000"
    assert id_floor(datetime.min.replace(tzinfo=UTC)) == zero
    assert id_floor(datetime(1969, 12, 31, tzinfo=UTC)) == zero
    assert id_floor(datetime(1970, 1, 1, tzinfo=UTC)) == zero
    assert id_floor(datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)) == (
        "00000000-0001-0000-0000-000000000000"
    )
