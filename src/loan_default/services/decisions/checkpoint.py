"""SQLite's WAL checkpoints, moved off the group-commit writer onto a thread of their own.

Why: by default SQLite checkpoints inside the commit that pushes the log past 1,000 pages, so
about once a second under load one group's commit also copies the log into the database file
and fsyncs it. Every prediction waiting on that group waits for the checkpoint too. Measured
with `bench/bench_recording.py` (SQLite FULL, 1 worker, 16 connections): p99 45 -> 22 ms side by
side in one run with checkpoints simply off, and 136 ms before vs 12-14 ms with this thread in
runs the same day (DESIGN.md, "Recording decisions in the request path"). So every store
connection is opened with `wal_autocheckpoint=0` (`engines`), and this thread runs
`wal_checkpoint(PASSIVE)` every `interval_s` on its own connection. A PASSIVE checkpoint takes
no write lock: the writer keeps committing to the log meanwhile, and SQLite starts the log over
at the next commit once a checkpoint has copied all of it (as with automatic checkpoints, an
open reader can hold that back until it finishes). On close, one last checkpoint empties the
log (`TRUNCATE`).

Several processes on one file (uvicorn workers, batch workers) each run one; only one
checkpoint runs at a time (SQLite's checkpoint lock) and a busy one is simply tried again at the
next tick.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Final

from loguru import logger
from sqlalchemy.engine import Engine

from loan_default.services.decisions.engines import autocommit_connection

#: Seconds between PASSIVE checkpoints: at ~2,000 records/s the log gains a few MB a second.
CHECKPOINT_INTERVAL_S: Final = 1.0


class WalCheckpointer:
    """A daemon thread checkpointing one SQLite store's WAL every `interval_s`."""

    def __init__(self, engine: Engine, *, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self._engine = engine
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.checkpoints = 0
        """PASSIVE checkpoints that ran (busy or failed ones are not counted)."""
        self._thread = threading.Thread(target=self._run, name="decision-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db: Any = None
        while not self._stop.wait(self._interval_s):
            try:
                if db is None:
                    db = autocommit_connection(self._engine)  # the thread's, closed below
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
            except Exception as exc:  # a locked, missing or full file: try again next tick
                logger.debug("WAL checkpoint skipped: {}", type(exc).__name__)
                if db is not None:
                    with contextlib.suppress(Exception):
                        db.close()
                    db = None
        if db is not None:
            with contextlib.suppress(Exception):
                db.close()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread, then empty the log once (best effort: another process may be
        reading it, in which case its own checkpoints carry on)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout_s)
        with contextlib.suppress(Exception), self._engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
