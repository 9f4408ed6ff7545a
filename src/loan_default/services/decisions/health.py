"""Is the decision store up? The /readyz answer, in bounded time whatever the database does.

Kept apart from `store` because it is its own small state machine: the evidence of a recent
commit, a single-flight probe in its own thread, and the writer's back-off it ends.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from loan_default.services.decisions.engines import StoreType
from loan_default.services.decisions.writer import GroupCommitWriter

#: a commit this recent (seconds) shows the store is up without probing it
FRESH_S: Final = 5.0


class StoreHealth:
    """`status()` for one store's engine and group-commit writer."""

    def __init__(self, engine: Engine, store_type: StoreType, writer: GroupCommitWriter) -> None:
        self._engine = engine
        self._type: StoreType = store_type
        self._writer = writer
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="decision-probe")
        self._probe: Future[bool] | None = None
        self._lock = threading.Lock()

    def ping(self) -> bool:
        """True if the store answers; raises what the database raises if it does not."""
        with self._engine.connect() as conn:
            if self._type == "sqlite":
                # the write lock, not just a read: a store that cannot be written is down
                raw = conn.connection.dbapi_connection
                assert raw is not None  # nosec B101 - type narrowing for mypy on an invariant, not input validation
                raw.execute("BEGIN IMMEDIATE")
                raw.execute("ROLLBACK")
            else:
                conn.execute(sa.text("SELECT 1"))
        return True

    def status(self, timeout_s: float = 1.0) -> dict[str, str]:
        """`{"type": "sqlite"|"postgresql", "status": "ok"|"unavailable"}` within `timeout_s`;
        never the error text.

        A group committed in the last `FRESH_S` seconds is proof enough (and a probe for the
        SQLite write lock would queue behind a busy writer and flap). Otherwise a single-flight
        probe runs in its own thread; one that answers ends the writer's back-off, so a
        recovered store records again at once."""
        w = self._writer
        if w.closed:
            return {"type": self._type, "status": "unavailable"}
        if w.healthy and time.monotonic() - w.last_commit < FRESH_S:
            return {"type": self._type, "status": "ok"}
        try:
            with self._lock:
                if self._probe is None or self._probe.done():
                    self._probe = self._pool.submit(self.ping)
                probe = self._probe
            ok = probe.result(timeout_s)
        except Exception:  # the probe's error (or a closed store) is the answer, not a failure
            ok = False
        if ok:
            w.retry_now()
        return {"type": self._type, "status": "ok" if ok else "unavailable"}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
