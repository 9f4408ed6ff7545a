"""Group commit: one writer thread, one transaction for every record that arrived meanwhile.

Why: a prediction may only be answered once its record is committed, and a commit costs a
round trip (PostgreSQL) or an fsync (SQLite, synchronous=FULL), so one transaction per request
caps throughput at the commit rate. Here callers put their record on a queue and wait; the
writer takes everything queued (up to `max_batch`), optionally lingers `flush_interval_s` for
more, writes them in one transaction and then wakes every waiter. While one group commits the
next one gathers, so groups grow with load and a lone request is not delayed. Async callers are
woken with one `call_soon_threadsafe` per event loop per group, not one per record.

Event loops hand over whole groups (`Ticket`, built by `handover.LoopHandover`): a loop keeps
one group in flight and gathers the next on its own side, so the thread is woken once per group
rather than once per record (each wake is a GIL hand-off the busy loop pays for).

Failure: every waiter of a failed group gets `DecisionStoreUnavailable`, and the writer keeps
running. For a short back-off after a failure (doubling, at most `MAX_BACKOFF_S`) new groups
fail at once instead of each waiting out a dead server; the first group after it tries again,
so recording resumes by itself when the database is back. A group that fails for a reason other
than availability (a bad value) is retried record by record, so one bad record fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Final

import psycopg2  # type: ignore[import-untyped]
import sqlalchemy as sa
from loguru import logger

from loan_default.services.decisions.errors import DecisionStoreUnavailable
from loan_default.services.decisions.records import DecisionRecord

Waiter = asyncio.Future[None] | Future[None]
Item = tuple[DecisionRecord, Waiter]
#: One loop's wake-up: (future, error or None) pairs, then the tickets' `on_settled` callbacks.
_Wake = tuple[list[tuple[asyncio.Future[None], str | None]], list[Callable[[], None]]]


class Ticket:
    """A group handed over by one event loop: its records and futures, and what to call on that
    loop once they are settled (the loop then hands over its next group)."""

    __slots__ = ("items", "loop", "on_settled")

    def __init__(
        self,
        items: list[Item],
        loop: asyncio.AbstractEventLoop,
        on_settled: Callable[[], None],
    ) -> None:
        self.items = items
        self.loop = loop
        self.on_settled = on_settled


#: PEP 249's classes for "the database, not the data": SQLite's covers locked, read-only, full
#: and missing files; psycopg2's covers refused and lost connections, cancels and lock timeouts.
_UNAVAILABLE: Final = (
    sqlite3.OperationalError,
    sqlite3.InterfaceError,
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
)
MIN_BACKOFF_S: Final = 0.05
MAX_BACKOFF_S: Final = 1.0
_STOP: Final = object()


#: A group-commit group's hook: the records as they will be written (the shadow challenger).
GroupHook = Callable[[list[DecisionRecord]], list[DecisionRecord]]


def run_hook(prepare: GroupHook, records: list[DecisionRecord]) -> list[DecisionRecord]:
    """A group hook's records, or the group as it came if the hook raises (or returns another
    number of records): the hook must never cost a record. For the thread and the child alike."""
    try:
        out = prepare(records)
    except Exception:
        logger.exception("decision group hook failed; group written without it")
        return records
    if len(out) != len(records):
        logger.error("decision group hook changed the group's size; group written without it")
        return records
    return out


def dbapi_error(exc: BaseException) -> BaseException:
    """The driver's own exception: SQLAlchemy wraps errors of the statements it runs, while the
    raw cursors of the bulk paths (executemany, COPY) raise the driver's directly."""
    return exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc


def is_unavailable(exc: BaseException) -> bool:
    """Errors that say the store cannot be reached or written now (down, locked, full,
    refusing connections, timed out), not that a record is bad."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(
        exc,
        sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError | OSError,
    ):
        return True
    return isinstance(dbapi_error(exc), _UNAVAILABLE)


class GroupCommitWriter:
    """The writer thread; `write(records)` must commit them in one transaction or raise."""

    def __init__(
        self,
        write: Callable[[list[DecisionRecord]], None],
        *,
        flush_interval_s: float,
        max_batch: int,
        maintain: Callable[[], None] | None = None,
        maintain_every_s: float = 3600.0,
        name: str = "decision-writer",
        prepare: Callable[[list[DecisionRecord]], list[DecisionRecord]] | None = None,
    ) -> None:
        if max_batch < 1 or flush_interval_s < 0:
            raise ValueError("max_batch must be >= 1 and flush_interval_s >= 0")
        self._write = write
        self.prepare = prepare
        """Run on each group just before it is written, in this thread (the challenger's shadow
        scoring); returns the records to write. If it raises, the group is written as it came."""
        self._flush_interval_s = flush_interval_s
        self._max_batch = max_batch
        self._maintain = maintain
        self._maintain_every_s = maintain_every_s
        self._next_maintenance = time.monotonic() + maintain_every_s
        self._queue: queue.SimpleQueue[Item | Ticket | object] = queue.SimpleQueue()
        self._backoff_s = 0.0
        self._down_until = 0.0
        self._closed = False
        self._wakes: dict[asyncio.AbstractEventLoop, _Wake] = {}
        """Per event loop, what the group being settled will tell it (`_wake_loops`)."""
        self.commits = 0
        """Transactions committed (a group is one; the tests compare it with records)."""
        self.records = 0
        """Records in committed transactions (duplicates included)."""
        self.failed_records = 0
        """Records whose waiters were told the store is unavailable."""
        self.last_commit = float("-inf")
        """`time.monotonic()` of the last committed group."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def healthy(self) -> bool:
        """False while in the back-off after a failed group."""
        return self._backoff_s == 0.0

    def submit(self, record: DecisionRecord, waiter: Waiter) -> None:
        if self._closed:
            raise DecisionStoreUnavailable("the decision store is closed")
        self._queue.put((record, waiter))

    def submit_ticket(self, ticket: Ticket) -> None:
        if self._closed:
            raise DecisionStoreUnavailable("the decision store is closed")
        self._queue.put(ticket)

    def submit_group(self, items: list[Item]) -> None:
        """Several records with thread futures as one queue entry (one wake of this thread): a
        group the writer child process received."""
        if self._closed:
            raise DecisionStoreUnavailable("the decision store is closed")
        self._queue.put(items)

    def retry_now(self) -> None:
        """End the back-off early (a health probe saw the store answer again)."""
        self._down_until = 0.0

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    # --- the thread --------------------------------------------------------------------------
    def _run(self) -> None:
        q = self._queue
        stopping = False
        while not stopping:
            first = q.get()
            if first is _STOP:
                break
            batch: list[Item] = []
            tickets: list[Ticket] = []
            self._take(first, batch, tickets)
            # a loop's ticket has gathered (and lingered) on its own side already
            linger = 0.0 if tickets else self._flush_interval_s
            deadline = time.monotonic() + linger
            while len(batch) < self._max_batch:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = q.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is _STOP:
                    stopping = True
                    break
                self._take(item, batch, tickets)
            self._commit(self._prepared(batch))
            self._wake_loops(tickets)
            self._maybe_maintain()
        self._drain()

    @staticmethod
    def _take(entry: object, batch: list[Item], tickets: list[Ticket]) -> None:
        if isinstance(entry, Ticket):
            batch.extend(entry.items)
            tickets.append(entry)
        elif isinstance(entry, list):
            batch.extend(entry)
        else:
            batch.append(entry)  # type: ignore[arg-type]

    def _wake_loops(self, tickets: list[Ticket]) -> None:
        """One `call_soon_threadsafe` per event loop for the whole group: it settles the loop's
        futures, then runs its tickets' `on_settled` (which hand over the loop's next group)."""
        wakes = self._wakes
        for ticket in tickets:
            wakes.setdefault(ticket.loop, ([], []))[1].append(ticket.on_settled)
        self._wakes = {}
        for loop, (outcomes, callbacks) in wakes.items():
            with contextlib.suppress(RuntimeError):  # the loop closed while its callers waited
                loop.call_soon_threadsafe(_wake, outcomes, callbacks)

    def _prepared(self, batch: list[Item]) -> list[Item]:
        if self.prepare is None:
            return batch
        records = run_hook(self.prepare, [record for record, _ in batch])
        return list(zip(records, (waiter for _, waiter in batch), strict=True))

    def _drain(self) -> None:
        """Fail whatever was queued after the stop (a caller racing `close`)."""
        left: list[Item] = []
        tickets: list[Ticket] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._take(item, left, tickets)
        if left:
            self._fail(left, "the decision store is closed")
        self._wake_loops(tickets)

    def _commit(self, batch: list[Item]) -> None:
        if time.monotonic() < self._down_until:
            self._fail(batch, "the decision store is unavailable")
            return
        try:
            self._write([record for record, _ in batch])
        except Exception as exc:
            if is_unavailable(exc):
                self._failed(batch, exc)
            elif len(batch) > 1:
                for item in batch:
                    self._commit([item])
            else:  # this record cannot be stored (a bug upstream); the store is fine
                logger.opt(exception=exc).error("a decision record could not be written")
                self._fail(batch, "the decision could not be recorded")
            return
        self.commits += 1
        self.records += len(batch)
        self.last_commit = time.monotonic()
        self._backoff_s = 0.0
        self._settle(batch, None)

    def _failed(self, batch: list[Item], exc: Exception) -> None:
        first = self._backoff_s == 0.0
        self._backoff_s = min(MAX_BACKOFF_S, max(MIN_BACKOFF_S, self._backoff_s * 2))
        self._down_until = time.monotonic() + self._backoff_s
        # the traceback once per outage; then one line per attempt
        logger.opt(exception=exc if first else None).warning(
            "decision store write failed ({}: {} records); next attempt in {:.2f} s",
            type(exc).__name__,
            len(batch),
            self._backoff_s,
        )
        self._fail(batch, "the decision store is unavailable")

    def _fail(self, batch: list[Item], error: str) -> None:
        self.failed_records += len(batch)
        self._settle(batch, error)

    def _maybe_maintain(self) -> None:
        if self._maintain is None or time.monotonic() < self._next_maintenance:
            return
        self._next_maintenance = time.monotonic() + self._maintain_every_s
        try:
            self._maintain()
        except Exception:  # maintenance must never stop the writer; the next hour retries
            logger.exception("decision store maintenance failed")

    def _settle(self, batch: list[Item], error: str | None) -> None:
        """Settle thread callers' futures now; note async ones for `_wake_loops` (a group
        retried record by record settles in parts, and its loops are still woken once)."""
        wakes = self._wakes
        for _, waiter in batch:
            if isinstance(waiter, asyncio.Future):
                wakes.setdefault(waiter.get_loop(), ([], []))[0].append((waiter, error))
            elif not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(DecisionStoreUnavailable(error))


def _wake(
    outcomes: list[tuple[asyncio.Future[None], str | None]], callbacks: list[Callable[[], None]]
) -> None:
    for fut, error in outcomes:
        if fut.done():  # cancelled: the caller timed out or went away
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(DecisionStoreUnavailable(error))
    for callback in callbacks:
        callback()
