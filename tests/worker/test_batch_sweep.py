"""The stall sweep: chunks whose message the broker lost are sent again, and only those.

The production job store on the test Redis (a key prefix of each test's own) and a broker
stand-in that records what would be sent; the real worker and broker are exercised by
`test_batch_faults.py::test_a_chunk_message_lost_by_the_broker_is_sent_again`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from loan_default.services import batch as bs
from loan_default.services.batch.sweep import sweep_stalled

pytestmark = pytest.mark.integration

STALL_S = 60.0


class Broker:
    """Queue depth on demand; what a sweep sends is kept, not sent."""

    def __init__(self) -> None:
        self.waiting = 0
        self.sent: list[tuple[str, list[int]]] = []

    def queued(self) -> int:
        return self.waiting

    def redispatch(self, job_id: str, chunks: Sequence[int]) -> None:
        self.sent.append((job_id, list(chunks)))


def _job(store: bs.RedisJobStore, n_chunks: int) -> bs.JobRecord:
    now = time.time()
    record = bs.JobRecord(
        job_id=bs.new_job_id(),
        kind="json",
        total=100 * n_chunks,
        chunk_sizes=[100] * n_chunks,
        created_at=now,
        expires_at=now + 3600,
    )
    store.create(record, {f"in-{i}": b"rows" for i in range(n_chunks)})
    return record


def _begin(store: bs.RedisJobStore, record: bs.JobRecord, index: int, marker: str) -> None:
    store.begin_chunk(record.job_id, index, [f"in-{index}"], marker)


def _done(store: bs.RedisJobStore, record: bs.JobRecord, index: int) -> None:
    store.put_chunk(record, index, {}, "100:1")


def test_only_unheld_chunks_of_an_idle_job_are_sent_and_only_when_the_queue_is_empty(
    store: bs.RedisJobStore,
) -> None:
    rec = _job(store, 5)
    t0 = rec.created_at
    _begin(store, rec, 0, f"{t0}:host:live")
    _done(store, rec, 0)
    store.beat("host:live", 600)
    _begin(store, rec, 1, f"{t0}:host:live")  # being scored by a worker that beats
    _begin(store, rec, 2, f"{t0}:host:dead")  # its worker stopped beating
    # chunks 3 and 4 were never begun: their messages were lost
    broker = Broker()

    assert sweep_stalled(store, broker, stall_s=STALL_S, now=t0 + STALL_S / 2) == {}
    broker.waiting = 7  # a backlog: the job is waiting behind it, not lost
    assert sweep_stalled(store, broker, stall_s=STALL_S, now=t0 + STALL_S + 1) == {}
    assert broker.sent == []

    broker.waiting = 0
    sent = sweep_stalled(store, broker, stall_s=STALL_S, now=t0 + STALL_S + 1)
    assert sent == {rec.job_id: [2, 3, 4]}
    assert broker.sent == [(rec.job_id, [2, 3, 4])]
    # once per stall period, not at every sweep
    assert sweep_stalled(store, broker, stall_s=STALL_S, now=t0 + STALL_S + 2) == {}
    again = sweep_stalled(store, broker, stall_s=STALL_S, now=t0 + 2 * STALL_S + 2)
    assert again == {rec.job_id: [2, 3, 4]}


def test_a_chunk_begun_recently_keeps_the_job_alive(store: bs.RedisJobStore) -> None:
    rec = _job(store, 3)
    t0 = rec.created_at
    _done(store, rec, 0)
    _begin(store, rec, 1, f"{t0 + 50}:host:gone")  # begun 50 s in, then its worker died
    broker = Broker()
    assert sweep_stalled(store, broker, stall_s=STALL_S, now=t0 + STALL_S + 1) == {}
    # ... and counts from that start: 60 s after it, chunks 1 and 2 are sent
    sent = sweep_stalled(store, broker, stall_s=STALL_S, now=t0 + 50 + STALL_S + 1)
    assert sent == {rec.job_id: [1, 2]}


def test_finished_failed_and_expired_jobs_leave_the_index(store: bs.RedisJobStore) -> None:
    finished, failed, expired = _job(store, 2), _job(store, 2), _job(store, 2)
    later = time.time() + 10 * STALL_S
    assert {job for job, _ in store.stale(later, 10)} == {
        finished.job_id,
        failed.job_id,
        expired.job_id,
    }
    _done(store, finished, 0)
    _done(store, finished, 1)  # the last chunk stored takes the job out, in the same script
    store.set_failed(failed, "scoring failed")
    store.client.delete(store._k(expired.job_id, "rec"))  # its TTL ran out
    assert {job for job, _ in store.stale(later, 10)} == {expired.job_id}
    broker = Broker()
    assert sweep_stalled(store, broker, stall_s=STALL_S, now=later) == {}
    assert store.stale(later, 10) == []
    assert broker.sent == []
