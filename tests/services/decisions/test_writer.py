"""The group-commit writer's logic, with a write function standing in for the database."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import pytest
import sqlalchemy as sa

from loan_default.services.decisions import DecisionRecord, DecisionStoreUnavailable
from loan_default.services.decisions.writer import GroupCommitWriter
from tests.services.decisions.conftest import make_record

pytestmark = pytest.mark.unit


class FakeDatabase:
    """Commits groups after `delay_s`; fails while `down`; refuses records named in `bad`."""

    def __init__(self, delay_s: float = 0.002) -> None:
        self.delay_s = delay_s
        self.down = False
        self.bad: set[str] = set()
        self.groups: list[list[str]] = []

    def write(self, records: list[DecisionRecord]) -> None:
        time.sleep(self.delay_s)
        if self.down:
            raise sa.exc.OperationalError("INSERT", {}, Exception("connection refused"))
        if any(r.decision_id in self.bad for r in records):
            raise sa.exc.DataError("INSERT", {}, Exception("bad value"))
        self.groups.append([r.decision_id for r in records])


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def writer(db: FakeDatabase) -> Iterator[GroupCommitWriter]:
    w = GroupCommitWriter(db.write, flush_interval_s=0.0, max_batch=64)
    yield w
    w.close()


def record_sync(writer: GroupCommitWriter, rec: DecisionRecord) -> None:
    fut: Future[None] = Future()
    writer.submit(rec, fut)
    fut.result(5)


async def record(writer: GroupCommitWriter, rec: DecisionRecord) -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    writer.submit(rec, fut)
    await fut


def test_concurrent_callers_share_commits(writer: GroupCommitWriter, db: FakeDatabase) -> None:
    async def main() -> None:
        await asyncio.gather(*(record(writer, make_record(i)) for i in range(200)))

    asyncio.run(main())
    assert sum(len(g) for g in db.groups) == 200 == writer.records
    assert writer.commits == len(db.groups) <= 200 // 64 + 2
    assert max(len(g) for g in db.groups) == 64  # max_batch bounds a group


def test_threads_share_commits_too(writer: GroupCommitWriter, db: FakeDatabase) -> None:
    threads = [
        threading.Thread(
            target=lambda i=i: [record_sync(writer, make_record(i)) for _ in range(20)]
        )
        for i in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writer.records == 320
    assert writer.commits < 320 / 2


def test_linger_gathers_more_per_group(db: FakeDatabase) -> None:
    w = GroupCommitWriter(db.write, flush_interval_s=0.25, max_batch=1000)
    try:

        async def main() -> None:
            async def late(i: int) -> None:
                await asyncio.sleep(0.01)
                await record(w, make_record(i))

            await asyncio.gather(record(w, make_record(0)), *(late(i) for i in range(1, 10)))

        asyncio.run(main())
    finally:
        w.close()
    assert db.groups
    assert len(db.groups[0]) == 10


def test_down_fails_every_waiter_then_recovers(writer: GroupCommitWriter, db: FakeDatabase) -> None:
    db.down = True
    with pytest.raises(DecisionStoreUnavailable):
        record_sync(writer, make_record(1))
    assert not writer.healthy
    with pytest.raises(DecisionStoreUnavailable):  # inside the back-off: fails at once
        record_sync(writer, make_record(2))
    db.down = False
    deadline = time.monotonic() + 5
    while True:
        try:
            record_sync(writer, make_record(3))
            break
        except DecisionStoreUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert writer.healthy
    assert writer.failed_records >= 2


def test_a_bad_record_fails_alone(writer: GroupCommitWriter, db: FakeDatabase) -> None:
    db.delay_s = 0.02
    recs = [make_record(i) for i in range(10)]
    db.bad.add(recs[3].decision_id)

    async def main() -> list[BaseException | None]:
        return await asyncio.gather(*(record(writer, r) for r in recs), return_exceptions=True)

    results = asyncio.run(main())
    assert [i for i, r in enumerate(results) if r is not None] == [3]
    assert isinstance(results[3], DecisionStoreUnavailable)
    assert writer.healthy  # a bad value is not an outage


def test_close_writes_what_is_queued_then_refuses(db: FakeDatabase) -> None:
    db.delay_s = 0.05
    w = GroupCommitWriter(db.write, flush_interval_s=0.0, max_batch=4)
    futures: list[Future[None]] = []
    for i in range(10):
        fut: Future[None] = Future()
        w.submit(make_record(i), fut)
        futures.append(fut)
    w.close()
    assert all(f.result(0) is None for f in futures)
    assert sum(len(g) for g in db.groups) == 10
    with pytest.raises(DecisionStoreUnavailable, match="closed"):
        w.submit(make_record(99), Future())


def test_maintenance_runs_on_schedule_and_its_errors_do_not_stop_the_writer(
    db: FakeDatabase,
) -> None:
    calls: list[float] = []

    def maintain() -> None:
        calls.append(time.monotonic())
        raise RuntimeError("boom")

    w = GroupCommitWriter(
        db.write, flush_interval_s=0.0, max_batch=4, maintain=maintain, maintain_every_s=0.01
    )
    try:
        for i in range(3):
            time.sleep(0.02)
            record_sync(w, make_record(i))
    finally:
        w.close()
    assert len(calls) == 3
    assert w.records == 3
