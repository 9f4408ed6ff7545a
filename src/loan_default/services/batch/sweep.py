"""Re-send the chunks of a stalled job: the one message loss Redis delivery leaves open.

kombu's Redis transport takes a message off the queue with BRPOP and only afterwards records
it as unacknowledged (`kombu.transport.redis.QoS.append`). A worker killed between the two
(SIGKILL, OOM kill, lost node) loses the message: it is no longer queued and was never in the
set that kombu restores after the visibility timeout, so its chunk is never scored and the job
stays in PROGRESS for good (CI caught a 30,000-row job stopped at 29,900 after a worker SIGKILL).

The job store knows better than the broker: which chunks are done, and which a worker with a
live heartbeat is scoring. A job with no activity for BATCH_STALL_S while the queue is empty
cannot be waiting for a queued chunk, so its chunks that no live worker holds are sent again.
Chunks are idempotent (a duplicate finds its chunk done and returns), so a false alarm costs a
skipped message, never a wrong or double-counted row. One worker sweeps at a time (a lock in
the store), every BATCH_STALL_S / 4 seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from loguru import logger

from loan_default.services.batch.stores import JobStore

#: Most stale jobs examined by one sweep (the rest wait for the next one).
SWEEP_LIMIT = 100


class Redispatcher(Protocol):
    """The broker side of a sweep (`worker.celery_app.CeleryDispatcher`)."""

    def queued(self) -> int:
        """Messages waiting in the chunk queue."""
        ...

    def redispatch(self, job_id: str, chunks: Sequence[int]) -> None:
        """Send these chunks of the job again."""
        ...


def sweep_stalled(
    store: JobStore,
    broker: Redispatcher,
    *,
    stall_s: float,
    now: float | None = None,
) -> dict[str, list[int]]:
    """Re-send the unheld chunks of every job idle for `stall_s`; returns job -> chunks sent.

    Does nothing while the queue holds messages: a job behind a backlog is waiting, not lost,
    and its chunks are still queued.
    """
    now = time.time() if now is None else now
    stale = store.stale(now - stall_s, SWEEP_LIMIT)
    if not stale or broker.queued() > 0:
        return {}
    sent: dict[str, list[int]] = {}
    for job_id, tracked in stale:
        state = store.state(job_id)
        if state is None or state.status in ("SUCCESS", "FAILURE"):
            store.untrack(job_id)  # finished, failed or expired
            continue
        begun = state.begun()
        starts = (float(marker.partition(":")[0]) for marker in state.started.values())
        last = max(tracked, state.record.created_at, *starts)
        if last > now - stall_s:
            store.track(job_id, last)
            continue
        live = store.alive(sorted({worker for _, worker in begun.values()}))
        missing = [
            i
            for i in range(state.record.n_chunks)
            if i not in state.done and (i not in begun or begun[i][1] not in live)
        ]
        store.track(job_id, now)
        if missing:
            broker.redispatch(job_id, missing)
            sent[job_id] = missing
            logger.warning(
                "job {} idle for {:.0f} s with an empty queue: {} chunk(s) sent again",
                job_id,
                now - last,
                len(missing),
            )
    return sent
