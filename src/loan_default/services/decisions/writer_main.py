"""The decision writer child process (`remote.WriterProcess` starts it; not a user command).

`python -m loan_default.services.decisions.writer_main FD`: FD is this end of a socket pair.
Frame 0 configures the store; every later frame is a group of records, handed to the store's
`GroupCommitWriter` as one queue entry and acknowledged (by sequence number) once its futures
are settled, that is after the commit. End of input: commit what is queued, acknowledge it,
exit. SIGINT and SIGTERM are ignored: the API's graceful stop ends this process, by closing its
end of the socket, after the last group of its last request. Nothing here answers a client, so
nothing here may crash on one bad group: a group that cannot be decoded is acknowledged as failed.
"""

from __future__ import annotations

import functools
import signal
import socket
import sys
import threading
from concurrent.futures import Future
from typing import Any

import orjson
from loguru import logger

from loan_default.core.logging import configure_sinks
from loan_default.services.decisions.remote import FrameReader, decode_records, frame
from loan_default.services.decisions.store import DecisionStore
from loan_default.services.decisions.writer import Item


class _Acks:
    """Sends each group's acknowledgement once all of its futures are settled (the writer thread
    settles them; a decode failure is acknowledged from the reading thread)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self.broken = False

    def send(self, seq: int, errors: list[tuple[int, str]]) -> None:
        data = frame(seq, orjson.dumps(errors) if errors else b"")
        with self._lock:
            if self.broken:
                return
            try:
                self._sock.sendall(data)
            except OSError:  # the API process is gone; the commits stand
                self.broken = True

    def group(self, seq: int, size: int) -> list[Future[None]]:
        """Futures for a group of `size` records; the last one settled sends the ack."""
        left = [size]
        errors: list[tuple[int, str]] = []
        futures: list[Future[None]] = []

        def settled(index: int, fut: Future[None]) -> None:
            exc = fut.exception()
            if exc is not None:
                errors.append((index, str(exc)))
            left[0] -= 1
            if left[0] == 0:
                self.send(seq, sorted(errors))

        for index in range(size):
            fut: Future[None] = Future()
            fut.add_done_callback(functools.partial(settled, index))
            futures.append(fut)
        return futures


def serve(sock: socket.socket) -> int:
    reader = FrameReader()
    frames: list[tuple[int, bytes]] = []

    def next_frame() -> tuple[int, bytes] | None:
        while not frames:
            data = sock.recv(1 << 16)
            if not data:
                return None
            frames.extend(reader.feed(data))
        return frames.pop(0)

    first = next_frame()
    if first is None:
        return 0
    config: dict[str, Any] = orjson.loads(first[1])
    configure_sinks(config.pop("log_level"), json_logs=config.pop("json_logs"))
    try:
        store = DecisionStore.from_url(config.pop("url"), migrate=False, **config)
    except Exception as exc:  # the API logs the loss and starts another child later
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        logger.error("decision store could not be opened: {}: {}", type(exc).__name__, first_line)
        return 1
    acks = _Acks(sock)
    acks.send(0, [])  # ready: the API's start-up waits for this
    try:
        while (item := next_frame()) is not None:
            seq, payload = item
            try:
                records = decode_records(payload)
            except Exception as exc:  # a bug on the sending side; fail the group, carry on
                logger.opt(exception=exc).error("decision group {} could not be decoded", seq)
                acks.send(seq, [(0, "the decision could not be recorded")])
                continue
            if not records:
                acks.send(seq, [])
                continue
            futures = acks.group(seq, len(records))
            items: list[Item] = list(zip(records, futures, strict=True))
            store.submit_group(items)
    finally:
        store.close()  # commits and acknowledges what is queued
    return 0


def main(argv: list[str] | None = None) -> int:
    # The API process decides when this one ends (end of input). Ctrl-C reaches the whole
    # process group, and a supervisor may TERM every process of the container or unit: dying
    # then would fail the groups of requests the API is still finishing in its graceful stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m loan_default.services.decisions.writer_main FD", file=sys.stderr)
        return 2
    with socket.socket(fileno=int(args[0])) as sock:
        sock.setblocking(True)
        return serve(sock)


if __name__ == "__main__":
    sys.exit(main())
