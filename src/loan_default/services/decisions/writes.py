"""How decisions reach the database: the transactions, the SQL, and the partition retry.

Two kinds of transaction: the group-commit writer's (`group`), on a connection it keeps between
groups (a pool checkout and SQLAlchemy's transaction wrapper cost more than a small group), and
a bulk chunk's (`records`, `batch`), on a pooled connection each. Both run on the driver's own
cursor (executemany, one JSON-bound INSERT, COPY), whose errors `writer.dbapi_error` unwraps.

A group is one INSERT statement on an autocommit connection: the statement is its transaction.
Why: the writer thread lets go of the GIL at every driver call (an `executemany` step per row,
BEGIN, COMMIT, a PostgreSQL round trip each) and must win it back from a busy event loop each
time; a handful of such hand-offs per record cost the API more CPU than the record itself
(measured: 7 context switches and +0.45 ms of CPU per prediction). One multi-row statement is
one hand-off per group. Groups over `codec.SQLITE_ROWS_PER_INSERT` rows (SQLite's bound
variables) take several statements inside an explicit BEGIN ... COMMIT.

PostgreSQL bulk writes COPY straight into the table inside a savepoint: a chunk's first delivery
(the usual case) has no conflict and costs one pass; a conflict (a redelivered chunk) rolls back
to the savepoint and takes the staged path, a temporary table and `INSERT ... SELECT ... ON
CONFLICT DO NOTHING`, which skips the rows already in. Either way the count returned is of rows
new to the store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy.engine import Engine

from loan_default.services.decisions import codec, partitions
from loan_default.services.decisions.batches import DecisionBatch
from loan_default.services.decisions.engines import autocommit_connection, store_type
from loan_default.services.decisions.pgcopy import CopyStream
from loan_default.services.decisions.records import DecisionRecord
from loan_default.services.decisions.writer import dbapi_error

#: PostgreSQL: no partition holds the row's month (SQLSTATE check_violation, this message).
_NO_PARTITION: Final = "no partition of relation"
_CHECK_VIOLATION: Final = "23514"
_COPY_BUFFER: Final = 1 << 20

Write = Callable[[Any], int]


class WritePaths:
    """The write side of one store (`DecisionStore` owns one)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.type = store_type(engine.url)
        self._conn: Any = None  # the group-commit writer's connection (its thread only)

    def group(self, records: list[DecisionRecord]) -> None:
        """The group-commit writer's write: one statement on its own autocommit connection."""
        data = codec.rows(records, self.type)
        times = {r.decided_at for r in records}
        self._with_partitions(times, lambda db: self._insert_group(db, data), self._dedicated)

    def records(self, records: Sequence[DecisionRecord]) -> int:
        times = {r.decided_at for r in records}
        if self.type == "sqlite":
            data = codec.rows(records, self.type)
            return self._with_partitions(times, lambda db: self._insert(db, data), self._pooled)
        payload = codec.copy_records(records)
        return self._with_partitions(times, lambda db: self._copy(db, payload), self._pooled)

    def batch(self, batch: DecisionBatch) -> int:
        times = {batch.created_at}
        if self.type == "sqlite":
            data = codec.batch_rows(batch, self.type)
            return self._with_partitions(times, lambda db: self._insert(db, data), self._pooled)
        payload = codec.copy_batch(batch)
        return self._with_partitions(times, lambda db: self._copy(db, payload), self._pooled)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- transactions ------------------------------------------------------------------------
    def _pooled(self, write: Write) -> int:
        with self.engine.begin() as conn:
            return write(conn.connection.dbapi_connection)

    def _dedicated(self, write: Write) -> int:
        """`write` on the writer's own driver connection: taken out of the pool (`detach`), in
        autocommit, so its statements commit themselves (see `_insert_group`)."""
        db: Any = self._conn
        if db is None:
            db = self._conn = autocommit_connection(self.engine)
        try:
            return write(db)
        except BaseException:
            # a fresh connection next time: this one may be dead, or hold a failed transaction
            # (and with it SQLite's write lock) until it is closed
            self._conn = None
            with contextlib.suppress(Exception):
                db.close()
            raise

    def _with_partitions(
        self, times: set[datetime], write: Write, run: Callable[[Write], int]
    ) -> int:
        """`run(write)`; on PostgreSQL, a row whose month has no partition yet makes that
        month's partition and tries once more (see `partitions`)."""
        try:
            return run(write)
        except Exception as exc:
            orig = dbapi_error(exc)
            if getattr(orig, "pgcode", None) != _CHECK_VIOLATION or _NO_PARTITION not in str(orig):
                raise
        partitions.ensure_months(self.engine, times)
        return run(write)

    # --- statements --------------------------------------------------------------------------
    def _insert(self, db: Any, data: Sequence[codec.Row]) -> int:
        """SQLite's bulk insert (PostgreSQL's bulk paths COPY)."""
        cur = db.cursor()
        try:
            cur.executemany(codec.sqlite_insert(self.engine.dialect), data)
            return int(cur.rowcount)
        finally:
            cur.close()

    def _insert_group(self, db: Any, data: Sequence[codec.Row]) -> int:
        """The rows in as few statements as the driver allows, atomically (module docstring)."""
        cur = db.cursor()
        try:
            if self.type != "sqlite":
                cur.execute(codec.pg_insert_json(self.engine.dialect), (codec.json_rows(data),))
                return int(cur.rowcount)
            step = codec.SQLITE_ROWS_PER_INSERT
            several = len(data) > step
            if several:
                cur.execute("BEGIN IMMEDIATE")
            written = 0
            for start in range(0, len(data), step):
                part = data[start : start + step]
                params = [value for row in part for value in row]
                cur.execute(codec.sqlite_insert_rows(self.engine.dialect, len(part)), params)
                written += int(cur.rowcount)
            if several:
                cur.execute("COMMIT")
            return written
        finally:
            cur.close()

    def _copy(self, db: Any, payload: CopyStream) -> int:
        """COPY inside a savepoint, or the staged path after a conflict (module docstring)."""
        from psycopg2.errors import UniqueViolation  # type: ignore[import-untyped]

        cur = db.cursor()
        dialect = self.engine.dialect
        try:
            cur.execute("SAVEPOINT decisions_copy")
            try:
                cur.copy_expert(codec.pg_copy(dialect), payload.rewind(), _COPY_BUFFER)
            except UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT decisions_copy")
            else:
                copied = int(cur.rowcount)
                cur.execute("RELEASE SAVEPOINT decisions_copy")
                return copied
            create, copy, insert = codec.pg_staged(dialect)
            cur.execute(create)
            cur.copy_expert(copy, payload.rewind(), _COPY_BUFFER)
            cur.execute(insert)
            return int(cur.rowcount)
        finally:
            cur.close()
