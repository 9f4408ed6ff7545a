"""The event loop's side of group commit: whole groups handed over, one in flight, one timer."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from loan_default.services.decisions import DecisionRecord, DecisionStoreUnavailable
from loan_default.services.decisions.handover import LoopHandover
from loan_default.services.decisions.writer import GroupCommitWriter
from tests.services.decisions.conftest import make_record

pytestmark = pytest.mark.unit


def on_a_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run a coroutine test on a fresh event loop (fixtures pass through)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class GatedDatabase:
    """Records each group's ids; a group waits for `gate` while it is cleared."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.groups: list[list[str]] = []
        self.down = False

    def write(self, records: list[DecisionRecord]) -> None:
        self.entered.set()
        self.gate.wait(10)
        if self.down:
            raise sa.exc.OperationalError("INSERT", {}, Exception("connection refused"))
        self.groups.append([r.decision_id for r in records])


@pytest.fixture
def db() -> GatedDatabase:
    return GatedDatabase()


@pytest.fixture
def writer(db: GatedDatabase) -> Iterator[GroupCommitWriter]:
    w = GroupCommitWriter(db.write, flush_interval_s=0.0, max_batch=10_000)
    yield w
    w.close()


@on_a_loop
async def test_records_of_one_pass_go_over_as_one_group(
    writer: GroupCommitWriter, db: GatedDatabase
) -> None:
    handover = LoopHandover(writer, asyncio.get_running_loop(), timeout_s=5)
    records = [make_record() for _ in range(50)]
    await asyncio.gather(*(handover.submit(r) for r in records))
    assert db.groups == [[r.decision_id for r in records]]
    assert writer.commits == 1


@on_a_loop
async def test_records_arriving_while_a_group_is_in_flight_go_together_next(
    writer: GroupCommitWriter, db: GatedDatabase
) -> None:
    loop = asyncio.get_running_loop()
    handover = LoopHandover(writer, loop, timeout_s=5)
    db.gate.clear()
    first = handover.submit(make_record())
    await loop.run_in_executor(None, db.entered.wait, 5)  # the first group is being written
    later = [make_record() for _ in range(30)]
    futures = [handover.submit(r) for r in later]
    await asyncio.sleep(0.05)
    assert len(db.groups) == 0
    assert not any(f.done() for f in futures)
    db.gate.set()
    await asyncio.gather(first, *futures)
    assert len(db.groups) == 2
    assert db.groups[1] == [r.decision_id for r in later]


@on_a_loop
async def test_a_ticket_holds_at_most_max_ticket_records(
    writer: GroupCommitWriter, db: GatedDatabase
) -> None:
    handover = LoopHandover(writer, asyncio.get_running_loop(), timeout_s=5, max_ticket=8)
    records = [make_record() for _ in range(20)]
    await asyncio.gather(*(handover.submit(r) for r in records))
    assert [len(g) for g in db.groups] == [8, 8, 4]
    assert [i for g in db.groups for i in g] == [r.decision_id for r in records]


@on_a_loop
async def test_a_stuck_writer_fails_waiting_records_by_the_deadline_and_drops_unsent_ones(
    writer: GroupCommitWriter, db: GatedDatabase
) -> None:
    loop = asyncio.get_running_loop()
    handover = LoopHandover(writer, loop, timeout_s=0.2)
    db.gate.clear()
    in_flight = handover.submit(make_record())
    await loop.run_in_executor(None, db.entered.wait, 5)
    unsent = [handover.submit(make_record()) for _ in range(5)]
    for fut in (in_flight, *unsent):
        with pytest.raises(DecisionStoreUnavailable, match=r"not recorded within 0\.2 s"):
            await fut
    db.gate.set()
    await asyncio.sleep(0.1)
    # the group in flight was written (too late for its caller); the unsent one never was
    assert len(db.groups) == 1
    assert len(db.groups[0]) == 1
    # and the handover still works
    await handover.submit(make_record())
    assert len(db.groups) == 2


@on_a_loop
async def test_store_down_fails_the_group_and_the_next_group_goes_over(
    writer: GroupCommitWriter, db: GatedDatabase
) -> None:
    handover = LoopHandover(writer, asyncio.get_running_loop(), timeout_s=5)
    db.down = True
    with pytest.raises(DecisionStoreUnavailable):
        await handover.submit(make_record())
    db.down = False
    writer.retry_now()
    await handover.submit(make_record())
    assert len(db.groups) == 1


@on_a_loop
async def test_a_closed_writer_fails_the_handover_at_once(
    writer: GroupCommitWriter, db: GatedDatabase
) -> None:
    handover = LoopHandover(writer, asyncio.get_running_loop(), timeout_s=5)
    writer.close()
    with pytest.raises(DecisionStoreUnavailable, match="closed"):
        await asyncio.wait_for(handover.submit(make_record()), 2)


@on_a_loop
async def test_each_loop_is_woken_once_per_group(
    writer: GroupCommitWriter, db: GatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    wakes = 0
    original = loop.call_soon_threadsafe

    def counting(*args: object, **kwargs: object) -> asyncio.Handle:
        nonlocal wakes
        wakes += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    handover = LoopHandover(writer, loop, timeout_s=5)
    await asyncio.gather(*(handover.submit(make_record()) for _ in range(40)))
    assert writer.commits == 1
    assert wakes == 1


@on_a_loop
async def test_a_linger_holds_the_hand_over_so_later_records_join(
    writer: GroupCommitWriter, db: GatedDatabase
) -> None:
    handover = LoopHandover(writer, asyncio.get_running_loop(), timeout_s=5, linger_s=0.05)
    first = handover.submit(make_record())
    await asyncio.sleep(0.01)  # a later pass of the loop, inside the linger
    second = handover.submit(make_record())
    await asyncio.gather(first, second)
    assert [len(g) for g in db.groups] == [2]
