"""The writer child process: what goes over the socket comes back from the store bit for bit, a
dead child fails its groups (never a silent loss) and is replaced, and close stops it."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import Iterator

import pytest

from loan_default.services.decisions import DecisionRecord, DecisionStore, DecisionStoreUnavailable
from loan_default.services.decisions.records import set_challenger
from loan_default.services.decisions.remote import (
    RESPAWN_S,
    FrameReader,
    WriterProcess,
    decode_records,
    encode_records,
    frame,
)
from tests.conftest import pid_alive
from tests.services.decisions.conftest import make_record


async def record_when_back(store: DecisionStore, within_s: float) -> DecisionRecord:
    """Record a new decision, retrying while the writer is refused (a child restarting), and
    return it once it is committed; fail if that takes longer than `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            await store.record(late := make_record(99))
            return late
        except DecisionStoreUnavailable:
            assert time.monotonic() < deadline, "recording did not resume"
            await asyncio.sleep(0.2)


@pytest.mark.unit
def test_records_survive_the_wire_format_exactly() -> None:
    records = [make_record(i) for i in range(6)]
    records.append(make_record(6, reference='O\'Brien \\ "x" é 名 \U0001f600', request_id=None))
    assert decode_records(encode_records(records)) == records


@pytest.mark.unit
def test_frames_split_anywhere_are_put_back_together() -> None:
    stream = frame(0, b'{"url": "x"}') + frame(1, b"") + frame(2, b'[[0, "down"]]')
    for cut in range(len(stream) + 1):
        reader = FrameReader()
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert got == [(0, b'{"url": "x"}'), (1, b""), (2, b'[[0, "down"]]')]


@pytest.fixture
def process_store(store_url: str) -> Iterator[DecisionStore]:
    config = {"url": store_url, "log_level": "WARNING", "json_logs": False}
    s = DecisionStore.from_url(store_url, record_timeout_s=10, process_config=config)
    try:
        yield s
    finally:
        s.close()


@pytest.mark.integration
def test_a_hung_child_is_killed_and_replaced(store_url: str) -> None:
    """A child that stops answering (SIGSTOP here; a deadlock in service) would hold the loop's
    group in flight forever, and with it every later decision. Its callers have their 503s at the
    record timeout; after STALL_TIMEOUTS of them the child is killed and a new one records."""
    config = {"url": store_url, "log_level": "WARNING", "json_logs": False}
    store = DecisionStore.from_url(store_url, record_timeout_s=1.0, process_config=config)

    async def go() -> tuple[int, int | None]:
        first = await store.start_writer_process()
        assert first is not None
        await store.record(make_record(0))
        os.kill(first, signal.SIGSTOP)
        with pytest.raises(DecisionStoreUnavailable):
            await store.record(make_record(1))
        late = await record_when_back(store, RESPAWN_S + 30)
        assert store.get(late.decision_id) == late
        return first, await store.start_writer_process()

    try:
        first, second = asyncio.run(go())
    finally:
        store.close()
    assert second is not None
    assert second != first
    assert not pid_alive(first)


@pytest.mark.integration
def test_a_child_that_cannot_open_its_store_is_restarted_ever_more_slowly(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A child that dies before its store is open (here: a URL it refuses; the API checked the
    same URL, so in service it is rarer: a crash at import, memory) logs one line, no traceback,
    and exits; the next start waits RESPAWN_S, then twice that, and so on, instead of a Python
    start every second for as long as it keeps failing."""
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lines.append, level="ERROR", format="{message}")
    url = "mysql://nobody@127.0.0.1:1/none"
    config = {"url": url, "log_level": "WARNING", "json_logs": False}

    async def go() -> list[float]:
        writer = WriterProcess(asyncio.get_running_loop(), config)
        starts: list[float] = []
        try:
            deadline = time.monotonic() + RESPAWN_S * 7 + 20
            while len(starts) < 3:
                assert time.monotonic() < deadline, lines
                try:
                    ready = writer.start()
                except DecisionStoreUnavailable:  # restarting: not yet
                    await asyncio.sleep(0.05)
                    continue
                starts.append(time.monotonic())
                with pytest.raises(DecisionStoreUnavailable):
                    await asyncio.wait_for(ready, 20)
        finally:
            writer.close(5)
        return starts

    try:
        starts = asyncio.run(go())
    finally:
        logger.remove(sink)
    waits = [b - a for a, b in itertools.pairwise(starts)]
    assert RESPAWN_S <= waits[0] < 2 * RESPAWN_S + 5, waits  # + the child's start-up
    assert 2 * RESPAWN_S <= waits[1] < 4 * RESPAWN_S + 5, waits
    assert [line.strip() for line in lines if "next start in" in line][:3] == [
        f"the decision writer process exited; 0 group(s) unacknowledged; next start in {d:.0f} s"
        for d in (RESPAWN_S, 2 * RESPAWN_S, 4 * RESPAWN_S)
    ]
    err = capfd.readouterr().err
    assert err.count("decision store could not be opened: ValueError") == 3, err
    assert "Traceback" not in err, err


@pytest.mark.integration
def test_groups_written_by_the_child_come_back_identical(process_store: DecisionStore) -> None:
    records = [make_record(i) for i in range(40)]

    async def go() -> int | None:
        pid = await process_store.start_writer_process()
        await asyncio.gather(*(process_store.record(r) for r in records))
        return pid

    pid = asyncio.run(go())
    assert pid is not None
    assert pid != os.getpid()
    for record in records:
        assert process_store.get(record.decision_id) == record
    process_store.close()
    assert not pid_alive(pid), "close stops the child"


@pytest.mark.integration
def test_a_killed_child_fails_its_groups_and_a_new_one_takes_over(
    process_store: DecisionStore,
) -> None:
    async def go() -> None:
        first = await process_store.start_writer_process()
        assert first is not None
        await process_store.record(make_record(0))  # the child is up and writing
        os.kill(first, signal.SIGKILL)
        # every caller is answered, never left hanging: refused, or told "recorded" only for a
        # record that is in the store
        during = [make_record(i) for i in range(1, 20)]
        outcomes = await asyncio.gather(
            *(process_store.record(r) for r in during), return_exceptions=True
        )
        assert any(isinstance(o, DecisionStoreUnavailable) for o in outcomes)
        for record, outcome in zip(during, outcomes, strict=True):
            assert outcome is None or isinstance(outcome, DecisionStoreUnavailable)
            if outcome is None:
                assert process_store.get(record.decision_id) == record
        # after the back-off a new child records again, no restart of the API
        late = await record_when_back(process_store, RESPAWN_S + 20)
        assert process_store.get(late.decision_id) == late
        second = await process_store.start_writer_process()
        assert second is not None
        assert second != first
        assert pid_alive(second)
        assert not pid_alive(first)

    asyncio.run(go())


@pytest.mark.integration
def test_the_group_hook_runs_before_the_group_leaves_for_the_child(
    process_store: DecisionStore,
) -> None:
    """The shadow challenger's model lives in the API process: its scores go over the wire."""

    def shadow(records: list[DecisionRecord]) -> list[DecisionRecord]:
        for r in records:
            set_challenger(r, "7", r.probability / 2)
        return records

    process_store.set_group_hook(shadow)
    record = make_record(1, challenger_version=None, challenger_probability=None)
    asyncio.run(process_store.record(record))
    got = process_store.get(record.decision_id)
    assert got is not None
    assert (got.challenger_version, got.challenger_probability) == ("7", record.probability / 2)


@pytest.mark.integration
def test_the_child_outlives_signals_meant_for_the_group_and_ends_with_the_api(
    process_store: DecisionStore,
) -> None:
    """Ctrl-C or a supervisor's TERM to every process must not fail the groups of requests the
    API is still finishing; the API closing the store is what ends the child."""

    async def go() -> int:
        pid = await process_store.start_writer_process()
        assert pid is not None
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        await asyncio.sleep(0.3)
        record = make_record(5)
        await process_store.record(record)
        assert process_store.get(record.decision_id) == record
        return pid

    pid = asyncio.run(go())
    assert pid_alive(pid)
    process_store.close()
    assert not pid_alive(pid)
