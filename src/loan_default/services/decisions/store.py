"""`DecisionStore`: write decision records durably, read them back, export and purge them.

One class for both back ends; what differs is confined to the write paths below, `partitions`
(PostgreSQL) and `engines` (connection settings). Writes:

* `record` / `record_sync` — one decision, returning only once its transaction has committed,
  through the group-commit writer (`writer`). This is the predict path: "durable before answered".
* `record_batch` (a chunk as columns, the batch worker's path) and `record_many` (a list of
  records) — one transaction: on PostgreSQL a binary `COPY` straight into the table inside a
  savepoint, falling back to a temporary table and `INSERT ... SELECT ... ON CONFLICT DO
  NOTHING` when some rows are already there (a redelivered chunk); on SQLite one
  `executemany`. Nothing is written twice; the return value counts only rows new to the store.

Outcomes (`record_outcomes`, `iter_outcomes_joined`, `outcomes_joined`) live beside the
decisions in the same database; `outcomes` holds how they are written and read.

Every method blocks (the writer thread is what lets `record` await): async callers run the
reads in a thread. Reads (`get`, `query`, `iter_range`, `export`) turn a database that cannot be
reached into `DecisionStoreUnavailable`, as writes do; `status` answers /readyz in bounded time.
A store starts a thread: make it after a fork (a Celery child's `worker_process_init`), not before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from loan_default.services.decisions import outcome_reads, partitions, queries, retention
from loan_default.services.decisions import outcomes as outcome_store
from loan_default.services.decisions.batches import DecisionBatch
from loan_default.services.decisions.checkpoint import WalCheckpointer
from loan_default.services.decisions.engines import (
    DEFAULT_BUSY_TIMEOUT_S,
    StoreType,
    Synchronous,
    create_store_engine,
    normalize_url,
    store_type,
)
from loan_default.services.decisions.errors import DecisionStoreUnavailable
from loan_default.services.decisions.handover import LoopHandovers
from loan_default.services.decisions.health import StoreHealth
from loan_default.services.decisions.ids import decided_at_of, valid_decision_id
from loan_default.services.decisions.outcome_reads import FeatureColumns, JoinedOutcomes
from loan_default.services.decisions.outcomes import Outcome, OutcomeColumns, OutcomeResult
from loan_default.services.decisions.records import DecisionRecord
from loan_default.services.decisions.remote import child_config
from loan_default.services.decisions.schema import decisions
from loan_default.services.decisions.writer import GroupCommitWriter, Item, is_unavailable
from loan_default.services.decisions.writes import WritePaths

if TYPE_CHECKING:
    from loan_default.core.config import Settings

T = TypeVar("T")
DEFAULT_FLUSH_INTERVAL_MS: Final = 0.0
DEFAULT_MAX_BATCH: Final = 500
DEFAULT_RECORD_TIMEOUT_S: Final = 10.0


class DecisionStore:
    """The decision record store; build it with `from_url` or `from_settings`."""

    def __init__(
        self,
        engine: Engine,
        *,
        flush_interval_ms: float = DEFAULT_FLUSH_INTERVAL_MS,
        max_batch: int = DEFAULT_MAX_BATCH,
        record_timeout_s: float = DEFAULT_RECORD_TIMEOUT_S,
        months_ahead: int = 2,
        process_config: dict[str, Any] | None = None,
    ) -> None:
        """`process_config`: `record`'s groups go to a child process opening its store with
        these (`remote`); None: to a thread of this process."""
        self.engine = engine
        self.type: StoreType = store_type(engine.url)
        self._record_timeout_s = record_timeout_s
        self._months_ahead = months_ahead
        self._writes = WritePaths(engine)
        self._writer = GroupCommitWriter(
            self._writes.group,
            flush_interval_s=flush_interval_ms / 1000,
            max_batch=max_batch,
            maintain=self._maintain if self.type == "postgresql" else None,
        )
        self._loops = LoopHandovers(
            self._writer,
            timeout_s=record_timeout_s,
            max_ticket=max_batch,
            linger_s=flush_interval_ms / 1000,
            process_config=process_config,
        )
        self._checkpointer = WalCheckpointer(engine) if self.type == "sqlite" else None
        self._health = StoreHealth(engine, self.type, self._writer)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        synchronous: Synchronous = "FULL",
        flush_interval_ms: float = DEFAULT_FLUSH_INTERVAL_MS,
        max_batch: int = DEFAULT_MAX_BATCH,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        record_timeout_s: float = DEFAULT_RECORD_TIMEOUT_S,
        migrate: bool = True,
        process_config: dict[str, Any] | None = None,
    ) -> DecisionStore:
        """A store for `sqlite:///path` or `postgresql://...`, migrated to head unless
        `migrate=False` (then the schema must already be there)."""
        sa_url = normalize_url(url)  # a malformed URL is a configuration error, raised as is
        try:
            engine = create_store_engine(
                sa_url, synchronous=synchronous, busy_timeout_s=busy_timeout_s
            )
            if migrate:
                # imported here: Alembic is not needed by the writer child (migrate=False)
                from loan_default.services.decisions.migrate import upgrade_engine

                try:
                    upgrade_engine(engine)
                except BaseException:
                    engine.dispose()
                    raise
        except Exception as exc:
            if is_unavailable(exc):
                raise DecisionStoreUnavailable("the decision store cannot be reached") from exc
            raise
        return cls(
            engine,
            flush_interval_ms=flush_interval_ms,
            max_batch=max_batch,
            record_timeout_s=record_timeout_s,
            process_config=process_config,
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate: bool = True) -> DecisionStore:
        options: dict[str, Any] = {
            "synchronous": settings.decision_sqlite_synchronous,
            "flush_interval_ms": settings.decision_flush_interval_ms,
            "max_batch": settings.decision_max_batch,
        }
        child = child_config(settings, options) if settings.decision_writer == "process" else None
        return cls.from_url(
            settings.decision_store_url, migrate=migrate, process_config=child, **options
        )

    # --- writes ------------------------------------------------------------------------------
    async def record(self, record: DecisionRecord) -> None:
        """Return once `record` is committed (with the records of concurrent callers), or raise
        `DecisionStoreUnavailable` (store down, or no commit within the record timeout).

        The record goes over with the other records of this event loop (`handover`): one
        hand-over to the writer (the loop's child process, or the thread) per group, one timeout
        timer per group."""
        await self._loops.for_loop(asyncio.get_running_loop()).submit(record)

    async def start_writer_process(self, timeout_s: float = 60.0) -> int | None:
        """Start the running loop's writer child now (the API's start-up) and wait until its
        store is open; its pid, or None when groups are written by a thread."""
        return await self._loops.start_process(timeout_s)

    def record_sync(self, record: DecisionRecord) -> None:
        """`record` for threads without an event loop; the same group commit."""
        fut: Future[None] = Future()
        self._writer.submit(record, fut)
        try:
            fut.result(self._record_timeout_s)
        except TimeoutError:
            raise DecisionStoreUnavailable(
                f"the decision was not recorded within {self._record_timeout_s:g} s"
            ) from None

    def record_many(self, records: Sequence[DecisionRecord]) -> int:
        """Write `records` in one transaction, idempotently; returns how many were new."""
        return self._bulk(self._writes.records, records) if records else 0

    def record_batch(self, batch: DecisionBatch) -> int:
        """`record_many` for a columnar chunk (the batch worker's path, no per-row objects)."""
        return self._bulk(self._writes.batch, batch) if len(batch) else 0

    @staticmethod
    def _bulk(write: Callable[[T], int], data: T) -> int:
        try:
            return write(data)
        except Exception as exc:
            if is_unavailable(exc):
                raise DecisionStoreUnavailable("the decision store is unavailable") from exc
            raise

    def record_outcomes(
        self,
        items: Sequence[Outcome] | OutcomeColumns,
        *,
        key_id: str,
        now: datetime | None = None,
    ) -> OutcomeResult:
        """Record outcomes reported by `key_id`, all or nothing: counts of inserted, unchanged
        (re-sent) and unknown items, or `OutcomeConflict` (409) and nothing written when one
        contradicts a recorded outcome. A `reference` names its latest decision (`outcomes`)."""
        columns = items if isinstance(items, OutcomeColumns) else OutcomeColumns.from_items(items)
        with self._translated():
            return outcome_store.record_outcomes(self.engine, columns, key_id=key_id, now=now)

    def _maintain(self) -> None:
        partitions.ensure_partitions(self.engine, self._months_ahead)

    # --- reads -------------------------------------------------------------------------------
    @contextmanager
    def _translated(self) -> Iterator[None]:
        """A database that cannot be reached becomes `DecisionStoreUnavailable`."""
        try:
            yield
        except Exception as exc:
            if is_unavailable(exc):
                raise DecisionStoreUnavailable("the decision store is unavailable") from exc
            raise

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._translated(), self.engine.connect() as conn:
            yield conn

    def get(self, decision_id: str) -> DecisionRecord | None:
        """The record of `decision_id`, or None (also for a string that is no decision id)."""
        decision_id = decision_id.lower()
        if not valid_decision_id(decision_id):
            return None
        t = decisions.c
        stmt = sa.select(decisions).where(
            t.decision_id == decision_id, t.decided_at == decided_at_of(decision_id)
        )
        with self._reading() as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else DecisionRecord.from_mapping(row)

    def query(
        self,
        *,
        reference: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        model_version: str | None = None,
        key_id: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> tuple[list[DecisionRecord], str | None]:
        """One page of matching records in time order, and the cursor of the next page (None
        on the last page). `start` is inclusive, `end` exclusive."""
        after = queries.decode_cursor(cursor) if cursor else None
        stmt = queries.select_page(
            reference=reference,
            start=start,
            end=end,
            model_version=model_version,
            key_id=key_id,
            after=after,
            limit=limit + 1,
        )
        with self._reading() as conn:
            page = [DecisionRecord.from_mapping(m) for m in conn.execute(stmt).mappings()]
        if len(page) <= limit:
            return page, None
        page = page[:limit]
        return page, queries.encode_cursor(page[-1].decision_id)

    def challenger_rows(self, start: datetime, end: datetime) -> list[tuple[Any, ...]]:
        """The decisions of [start, end) the challenger scored, as `queries.CHALLENGER_COLUMNS`
        tuples in time order (five columns, not whole records: a month is many rows)."""
        stmt = queries.select_challenger(start=start, end=end)
        with self._reading() as conn:
            return [tuple(row) for row in conn.execute(stmt)]

    def iter_pages(
        self, start: datetime, end: datetime, batch_size: int = 5000
    ) -> Iterator[list[DecisionRecord]]:
        """Every record with start <= decided_at < end, a page per short query (no cursor or
        transaction is held open between pages)."""
        after: str | None = None
        while True:
            stmt = queries.select_page(start=start, end=end, after=after, limit=batch_size)
            with self._reading() as conn:
                page = [DecisionRecord.from_mapping(m) for m in conn.execute(stmt).mappings()]
            if page:
                yield page
            if len(page) < batch_size:
                return
            after = page[-1].decision_id

    def iter_range(
        self, start: datetime, end: datetime, batch_size: int = 5000
    ) -> Iterator[DecisionRecord]:
        for page in self.iter_pages(start, end, batch_size):
            yield from page

    def iter_outcomes_joined(
        self,
        start: datetime,
        end: datetime,
        *,
        model_version: str | None = None,
        page_size: int = 50_000,
    ) -> Iterator[JoinedOutcomes]:
        """Decisions of [start, end) joined to their outcomes (`defaulted` -1 when none yet),
        a page of numpy columns at a time, in time order."""
        pages = outcome_reads.iter_joined(
            self.engine, start, end, model_version=model_version, page_size=page_size
        )
        yield from self._translated_pages(pages)

    def _translated_pages(self, pages: Iterator[T]) -> Iterator[T]:
        """`pages` with each fetch's driver errors translated (`_translated`), not the
        consumer's code between pages."""
        while True:
            with self._translated():
                page = next(pages, None)
            if page is None:
                return
            yield page

    def outcomes_joined(
        self,
        start: datetime,
        end: datetime,
        *,
        model_version: str | None = None,
        page_size: int = 50_000,
    ) -> JoinedOutcomes:
        """`iter_outcomes_joined` as one set of arrays (for the performance metrics)."""
        return JoinedOutcomes.concat(
            list(
                self.iter_outcomes_joined(
                    start, end, model_version=model_version, page_size=page_size
                )
            )
        )

    def iter_feature_columns(
        self, start: datetime, end: datetime, *, page_size: int = 50_000
    ) -> Iterator[FeatureColumns]:
        """The recorded inputs of the decisions of [start, end), a page of numpy columns at a
        time, in time order (the report's PSI over time)."""
        pages = outcome_reads.iter_features(self.engine, start, end, page_size=page_size)
        yield from self._translated_pages(pages)

    def export(
        self, start: datetime, end: datetime, out_path: Path, *, escape_formulas: bool = True
    ) -> int:
        """Write the records of [start, end) to a .csv or .parquet file; returns the row count."""
        # imported here: it loads the model libraries, which the writer child has no use for
        from loan_default.services.decisions.export import write_export

        return write_export(
            self.iter_pages(start, end), Path(out_path), escape_formulas=escape_formulas
        )

    # --- retention and health ----------------------------------------------------------------
    def purge(self, older_than: datetime) -> int:
        """Remove records decided before `older_than`, and their outcomes; returns how many
        records (`retention.purge`)."""
        return retention.purge(self.engine, self.type, older_than)

    def status(self, timeout_s: float = 1.0) -> dict[str, str]:
        """For /readyz: type and `ok`/`unavailable` within `timeout_s` (`health.StoreHealth`)."""
        return self._health.status(timeout_s)

    def set_group_hook(
        self, prepare: Callable[[list[DecisionRecord]], list[DecisionRecord]] | None
    ) -> None:
        """Run `prepare` on each group-commit group just before it is written (writer thread),
        or sent to a writer child process (on the event loop: the models are loaded here)."""
        self._writer.prepare = prepare

    def stats(self) -> dict[str, int]:
        """Counters of the group-commit writer (commits, records, failed_records)."""
        w = self._writer
        return {"commits": w.commits, "records": w.records, "failed_records": w.failed_records}

    def submit_group(self, items: list[Item]) -> None:
        """Records with thread futures to the group-commit writer as one entry (the child's)."""
        self._writer.submit_group(items)

    def close(self) -> None:
        """Commit what is queued, stop the writer(s) and release the connections."""
        self._loops.close()
        self._writer.close()
        self._writes.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._health.close()
        self.engine.dispose()

    def __enter__(self) -> DecisionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
