"""The API's group-commit writer in a process of its own: the event loop never shares its GIL.

Why: with the writer as a thread of the API process, every group makes that thread take the GIL
back from the busy event loop several times (waking up, each driver call, settling the waiters):
measured with `strace` on 1 worker at 16 connections, ~40 futex calls per PostgreSQL group and
~4 context switches per prediction, and even a writer that writes nothing cost the loop ~45 us
of CPU per prediction. Predict throughput with recording on scattered between 60 and 94 % of
recording off from one run to the next. A child process does the same work (the same
`GroupCommitWriter`, store and SQL) under its own GIL; the loop's share is one `send` per group
and one readable event per acknowledgement, both on a socket pair it polls like any other socket.

The contract is `GroupCommitWriter.submit_ticket`'s, so `handover.LoopHandover` drives either:
a ticket's futures are settled, then its `on_settled` runs on the loop, once the child says the
group committed (or failed; per record when one bad record was written alone). An acknowledgement
is sent only after the commit, so "durable before answered" holds across the process boundary.

Wire format, both ways: frames of a `HEADER` (payload length, group sequence number) and an
orjson payload. Frame 0 configures the child (the store URL travels here, never in argv or the
environment); a group is a list of records as field tuples in `FIELD_NAMES` order; an
acknowledgement is empty (all committed) or `[[index, error], ...]` for the records that were not.

If the child dies, every group it had not acknowledged fails (`DecisionStoreUnavailable`: the
caller gets a 503, never a 200 for a record that may be missing) and a new child is started on
the next group after `RESPAWN_S`; after a child that died before its store was open (a store
that cannot be reached, a bad URL), the wait doubles up to `RESPAWN_MAX_S`, as a Python start
costs ~0.5 s of CPU and a request every second would otherwise pay it every second. If the API
process dies, the child reads end-of-file, commits what it has and exits. A child that does not
acknowledge a group within `stall_s` (`STALL_TIMEOUTS` record timeouts: its callers have long had
their 503s, and every wait of the store's own has ended: connect 5 s, SQLite busy 10 s, TCP user
timeout 20 s) is hung, not slow: it is killed and treated as dead, or the loop's hand-over, which
waits for the group in flight, would stall every later group until the API restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import socket
import struct
import subprocess  # nosec B404 - starts our own module with the current interpreter, no shell
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import orjson
from loguru import logger

from loan_default.services.decisions.errors import DecisionStoreUnavailable
from loan_default.services.decisions.records import FIELD_NAMES, DecisionRecord
from loan_default.services.decisions.writer import GroupHook, Ticket, run_hook

if TYPE_CHECKING:
    from loan_default.core.config import Settings

HEADER: Final = struct.Struct("<IQ")  # payload bytes, group sequence number (0: configuration)
#: Seconds after a child is lost before the next one is started (groups fail meanwhile).
RESPAWN_S: Final = 1.0
#: The longest wait, reached by doubling `RESPAWN_S` while children die before they are ready.
RESPAWN_MAX_S: Final = 30.0
#: Record timeouts after which a group not acknowledged means a hung child (see the module doc).
STALL_TIMEOUTS: Final = 3
_FIELDS: Final = operator.attrgetter(*FIELD_NAMES)
_DECIDED_AT: Final = FIELD_NAMES.index("decided_at")
_MODULE: Final = "loan_default.services.decisions.writer_main"


def encode_records(records: list[DecisionRecord]) -> bytes:
    """A group's payload: each record's fields in table order (`decided_at` as ISO 8601)."""
    return orjson.dumps([_FIELDS(r) for r in records])


def decode_records(payload: bytes) -> list[DecisionRecord]:
    """The records of a group payload, checked again by `DecisionRecord` itself."""
    out = []
    for row in orjson.loads(payload):
        row[_DECIDED_AT] = datetime.fromisoformat(row[_DECIDED_AT])
        out.append(DecisionRecord(*row))
    return out


def frame(seq: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), seq) + payload


def child_config(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    """What the child opens its store with: `options` (`DecisionStore.from_url`'s keywords),
    the URL, and the log settings."""
    return {
        **options,
        "url": settings.decision_store_url,
        "log_level": settings.log_level,
        "json_logs": settings.json_logs,
    }


def _child_env() -> dict[str, str]:
    """The API's environment, less the Prometheus multiprocess directory: the child serves no
    metrics, and its files there would count it as one more API worker."""
    return {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}


class FrameReader:
    """Splits a byte stream into `(seq, payload)` frames."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out = []
        size = HEADER.size
        while len(buf) >= size:
            length, seq = HEADER.unpack_from(buf)
            if len(buf) < size + length:
                break
            out.append((seq, bytes(buf[size : size + length])))
            del buf[: size + length]
        return out


class WriterProcess:
    """One event loop's writer child (see the module doc); call everything on that loop, except
    `close`, which may come from any thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: dict[str, Any],
        *,
        stall_s: float = 30.0,
        hook: Callable[[], GroupHook | None] = lambda: None,
    ) -> None:
        """`config`: the keyword arguments of `DecisionStore.from_url` for the child, plus `url`
        and the log settings (`log_level`, `json_logs`); `stall_s`: see the module doc; `hook`:
        the store's group hook now (the shadow challenger), run on each group before it is sent,
        as the challenger's model is loaded in this process, not in the child."""
        self._loop = loop
        self._hook = hook
        self._stall_s = stall_s
        self._deadlines: dict[int, asyncio.TimerHandle] = {}
        self._config = orjson.dumps(config)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader = FrameReader()
        self._out = bytearray()
        self._pending: dict[int, Ticket] = {}
        self._seq = 0
        self._down_until = 0.0
        self._failed_starts = 0  # children in a row that died before their store was open
        self._closed = False
        self._ready: asyncio.Future[None] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> asyncio.Future[None]:
        """Start the child now rather than with the first group; the future completes once its
        store is open (it fails if the child dies first)."""
        if self._sock is None and not self._closed:
            self._spawn()
        if self._ready is None:  # closed before it ever started
            self._ready = self._loop.create_future()
            self._ready.set_exception(DecisionStoreUnavailable("the decision store is closed"))
        return self._ready

    def submit_ticket(self, ticket: Ticket) -> None:
        if self._closed:
            raise DecisionStoreUnavailable("the decision store is closed")
        if self._sock is None:
            self._spawn()
        records = [record for record, _ in ticket.items]
        prepare = self._hook()
        if prepare is not None:
            records = run_hook(prepare, records)
        self._seq += 1
        self._pending[self._seq] = ticket
        self._deadlines[self._seq] = self._loop.call_later(self._stall_s, self._stalled, self._seq)
        self._send(frame(self._seq, encode_records(records)))

    # --- the socket --------------------------------------------------------------------------
    def _spawn(self) -> None:
        if time.monotonic() < self._down_until:
            raise DecisionStoreUnavailable("the decision writer is restarting; retry shortly")
        ours, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(  # noqa: S603  # nosec B603 - fixed argv: this interpreter, our module
                [sys.executable, "-m", _MODULE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=_child_env(),
            )
        except OSError as exc:
            ours.close()
            self._failed_starts += 1
            self._down_until = time.monotonic() + self._respawn_delay()
            logger.error("decision writer process could not start: {}", type(exc).__name__)
            raise DecisionStoreUnavailable("the decision writer could not start") from None
        finally:
            theirs.close()
        ours.setblocking(False)
        self._proc, self._sock = proc, ours
        self._ready = self._loop.create_future()
        self._loop.add_reader(ours.fileno(), self._on_readable)
        self._send(frame(0, self._config))

    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            return
        if self._out:
            self._out += data
            return
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._loop.call_soon(self._lost, "the decision writer process is gone")
            return
        if sent < len(data):
            self._out += data[sent:]
            self._loop.add_writer(sock.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sent = sock.send(self._out)
        except BlockingIOError:
            return
        except OSError:
            self._lost("the decision writer process is gone")
            return
        del self._out[:sent]
        if not self._out:
            self._loop.remove_writer(sock.fileno())

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost("the decision writer process exited")
            return
        for seq, payload in self._reader.feed(data):
            self._acknowledged(seq, payload)

    def _acknowledged(self, seq: int, payload: bytes) -> None:
        if seq == 0:  # the child's store is open
            self._failed_starts = 0
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            return
        ticket = self._pending.pop(seq, None)
        if ticket is None:
            return
        deadline = self._deadlines.pop(seq, None)
        if deadline is not None:
            deadline.cancel()
        errors: dict[int, str] = dict(orjson.loads(payload)) if payload else {}
        for index, (_, fut) in enumerate(ticket.items):
            if fut.done():  # cancelled, or failed by the group's timeout
                continue
            error = errors.get(index)
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(DecisionStoreUnavailable(error))
        ticket.on_settled()

    def _stalled(self, seq: int) -> None:
        """Group `seq` is not acknowledged after `stall_s`: the child is hung; kill it."""
        self._deadlines.pop(seq, None)
        if seq not in self._pending or self._proc is None:
            return
        logger.error(
            "decision writer process {} did not acknowledge a group in {:g} s; killing it",
            self._proc.pid,
            self._stall_s,
        )
        self._proc.kill()
        self._lost("the decision writer process stalled")

    def _lost(self, reason: str) -> None:
        """The child is gone: fail what it had not acknowledged; the next group starts another."""
        if self._sock is None:
            return
        self._detach()
        if not self._closed:  # `close` reaps the child it asked to stop
            if self._ready is not None and not self._ready.done():
                self._failed_starts += 1
            delay = self._respawn_delay()
            logger.error(
                "{}; {} group(s) unacknowledged; next start in {:.0f} s",
                reason,
                len(self._pending),
                delay,
            )
            self._reap(timeout_s=0.0)
            self._down_until = time.monotonic() + delay
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(DecisionStoreUnavailable(reason))
            self._ready.exception()  # retrieved: nobody may be waiting for it
        for deadline in self._deadlines.values():
            deadline.cancel()
        self._deadlines.clear()
        pending, self._pending = self._pending, {}
        for ticket in pending.values():
            for _, fut in ticket.items:
                if not fut.done():
                    fut.set_exception(DecisionStoreUnavailable(reason))
            ticket.on_settled()

    def _respawn_delay(self) -> float:
        """`RESPAWN_S`, doubled for each child in a row that died before it was ready."""
        return float(min(RESPAWN_S * 2 ** max(self._failed_starts - 1, 0), RESPAWN_MAX_S))

    def _detach(self) -> None:
        sock, self._sock = self._sock, None
        self._out.clear()
        self._reader = FrameReader()
        if sock is None:
            return
        if not self._loop.is_closed():
            with contextlib.suppress(Exception):  # the loop may be stopping
                self._loop.remove_reader(sock.fileno())
                self._loop.remove_writer(sock.fileno())
        sock.close()

    def _reap(self, timeout_s: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            if timeout_s > 0:
                logger.error("decision writer process did not stop; killing it")
                proc.kill()
                proc.wait(5)
            else:  # lost but still running (it closed the socket): make sure it goes
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)

    def close(self, timeout_s: float = 30.0) -> None:
        """End of input for the child: it commits what it has, then exits; wait for that."""
        self._closed = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        self._reap(timeout_s)
        if sock is None:
            return
        try:
            running = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            running = False
        if running or self._loop.is_closed() or not self._loop.is_running():
            self._detach()
        else:
            self._loop.call_soon_threadsafe(self._detach)
