"""The event loop's side of group commit: one group in flight per loop, the next one gathering.

Why: handing each record to the writer thread as it comes wakes that thread once per record, and
every wake is a GIL hand-off the busy event loop pays for (measured on 1 worker at 16
connections: ~6 context switches and +0.3 ms of loop CPU per prediction, a third of the
throughput). Here a loop gathers its records in a list of its own; when the writer has nothing
of this loop's in flight, the list goes over as one `Ticket` at the end of the loop's current
pass; while a group is in flight, later records wait on the loop's side and go over together as
soon as the writer settles it (its wake-up runs `_settled`). So a loop wakes the writer once per
group, and groups grow with load by themselves: one commit's duration of arrivals.

Each gathering group has one timer (not one per record): when it fires, every record of the
group still waiting fails with `DecisionStoreUnavailable`, whether the group is still gathering
(the writer is stuck on a dead server) or in flight.

`LoopHandovers` keeps one `LoopHandover` per loop, to the store's writer thread or to a writer
child process of the loop's own (`remote`, DECISION_WRITER=process).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Final

from loan_default.services.decisions.errors import DecisionStoreUnavailable
from loan_default.services.decisions.records import DecisionRecord
from loan_default.services.decisions.remote import STALL_TIMEOUTS, WriterProcess
from loan_default.services.decisions.writer import GroupCommitWriter, Item, Ticket

#: Records handed over in one ticket at most; the rest go with the next one.
MAX_TICKET: Final = 500


class _Group:
    __slots__ = ("items", "timer")

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.timer: asyncio.TimerHandle | None = None


class LoopHandover:
    """One event loop's records on their way to a `GroupCommitWriter` (see the module doc)."""

    def __init__(
        self,
        writer: GroupCommitWriter | WriterProcess,
        loop: asyncio.AbstractEventLoop,
        *,
        timeout_s: float,
        max_ticket: int = MAX_TICKET,
        linger_s: float = 0.0,
    ) -> None:
        """`max_ticket` is DECISION_MAX_BATCH; `linger_s` (DECISION_FLUSH_INTERVAL_MS) delays
        the hand-over of a group when none is in flight, so more records join it."""
        self._writer = writer
        self._loop = loop
        self._timeout_s = timeout_s
        self._max_ticket = max_ticket
        self._linger_s = linger_s
        self._gathering: _Group | None = None
        self._in_flight: _Group | None = None
        self._scheduled = False

    @property
    def writer(self) -> GroupCommitWriter | WriterProcess:
        return self._writer

    def submit(self, record: DecisionRecord) -> asyncio.Future[None]:
        """A future that completes once `record` is committed (or fails); call on the loop."""
        fut: asyncio.Future[None] = self._loop.create_future()
        group = self._gathering
        if group is None:
            group = self._gathering = _Group()
            group.timer = self._loop.call_later(self._timeout_s, self._expire, group)
        group.items.append((record, fut))
        if self._in_flight is None and not self._scheduled:
            self._scheduled = True
            if self._linger_s > 0:
                self._loop.call_later(self._linger_s, self._hand_over)
            else:
                self._loop.call_soon(self._hand_over)
        return fut

    def _hand_over(self) -> None:
        self._scheduled = False
        group = self._gathering
        if self._in_flight is not None or group is None:
            return
        if len(group.items) > self._max_ticket:
            rest = _Group()
            rest.items = group.items[self._max_ticket :]
            del group.items[self._max_ticket :]
            if group.timer is not None:  # the same deadline: these came as early
                rest.timer = self._loop.call_at(group.timer.when(), self._expire, rest)
            self._gathering = rest
        else:
            self._gathering = None
        self._in_flight = group
        try:
            self._writer.submit_ticket(Ticket(group.items, self._loop, self._settled))
        except DecisionStoreUnavailable as exc:
            self._in_flight = None
            _fail(group.items, str(exc))

    def _settled(self) -> None:
        """The writer settled the group in flight (its futures are done): send the next."""
        group = self._in_flight
        self._in_flight = None
        if group is not None and group.timer is not None:
            group.timer.cancel()
        if self._gathering is not None:
            self._hand_over()

    def _expire(self, group: _Group) -> None:
        """Fail what still waits; a group that never left is dropped (its callers got 503s)."""
        if group is self._gathering:
            self._gathering = None
        _fail(group.items, f"the decision was not recorded within {self._timeout_s:g} s")


def _fail(items: list[Item], error: str) -> None:
    for _, fut in items:
        if not fut.done():
            fut.set_exception(DecisionStoreUnavailable(error))


class LoopHandovers:
    """Each event loop's `LoopHandover`, to the store's writer thread or, with `process_config`,
    to a writer child process of the loop's own (`remote`)."""

    def __init__(
        self,
        writer: GroupCommitWriter,
        *,
        timeout_s: float,
        max_ticket: int,
        linger_s: float,
        process_config: dict[str, Any] | None,
    ) -> None:
        self._writer = writer
        self._timeout_s, self._max_ticket, self._linger_s = timeout_s, max_ticket, linger_s
        self._process_config = process_config
        self._handovers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopHandover] = (
            weakref.WeakKeyDictionary()
        )
        self._processes: list[WriterProcess] = []

    def for_loop(self, loop: asyncio.AbstractEventLoop) -> LoopHandover:
        handover = self._handovers.get(loop)
        if handover is None:
            target: GroupCommitWriter | WriterProcess = self._writer
            if self._process_config is not None:
                target = WriterProcess(
                    loop,
                    self._process_config,
                    stall_s=STALL_TIMEOUTS * self._timeout_s,
                    hook=lambda: self._writer.prepare,  # one hook, the store's: set_group_hook
                )
                self._processes.append(target)
            handover = self._handovers[loop] = LoopHandover(
                target,
                loop,
                timeout_s=self._timeout_s,
                max_ticket=self._max_ticket,
                linger_s=self._linger_s,
            )
        return handover

    async def start_process(self, timeout_s: float) -> int | None:
        """Start the running loop's child now and wait until its store is open (so the first
        predictions do not wait for its imports); its pid, or None without one. Raises
        `DecisionStoreUnavailable` if it dies or is not up within `timeout_s`."""
        target = self.for_loop(asyncio.get_running_loop()).writer
        if not isinstance(target, WriterProcess):
            return None
        try:
            await asyncio.wait_for(asyncio.shield(target.start()), timeout_s)
        except TimeoutError:
            raise DecisionStoreUnavailable(
                f"the decision writer was not up within {timeout_s:g} s"
            ) from None
        return target.pid

    def close(self) -> None:
        """Stop every child (each commits what it has first)."""
        for process in self._processes:
            process.close()
        self._processes.clear()
