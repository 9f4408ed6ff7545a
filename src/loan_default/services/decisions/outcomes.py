"""Outcomes: whether a decided applicant defaulted, recorded beside its decision.

Recording (`record_outcomes`) is all or nothing, and the same on both back ends:

1. The request's items go to a session-private staging table (SQLite: `executemany` in chunks;
   PostgreSQL: `COPY` of Arrow-written CSV in chunks), each with its position in the request.
2. Decision ids are checked against `decisions` on its primary key (the decision time comes from
   the id, so PostgreSQL probes one partition); a `reference` resolves to the **latest**
   decision with that reference (the highest id: ids are time-ordered). A lender that scores an
   application again (a corrected income, a second look) acts on the last answer, and the loan
   whose outcome is reported is the one that answer granted; a client that needs an earlier
   decision sends its `decision_id`. Items matching no decision are counted and the first
   `MAX_LISTED` reported back as sent, never dropped silently.
3. `INSERT ... SELECT ... ON CONFLICT (decision_id) DO NOTHING` of the known items, in id order
   (the index's order); the first item of a decision sent twice in one request is the one kept.
4. Then conflicts are found by a join: a staged item whose `defaulted` differs from the row now
   stored for its decision contradicts either an earlier outcome or another item of the same
   request. Any conflict rolls the whole request back (`OutcomeConflict`, 409).

Checking *after* the insert is what makes concurrent uploads safe. On PostgreSQL (READ
COMMITTED) an insert that meets a concurrent transaction's row for the same decision waits for
it to commit, and the next statement, the join, sees that row; checking first would miss it.
On SQLite the insert and the check run under one `BEGIN IMMEDIATE` (the write lock), while the
staging and the look-ups before it run outside it, so the group-commit writer of predictions is
held up only by the insert and the join.

The same outcome sent again (same decision, same `defaulted`) changes nothing and is counted
`unchanged`, whatever its `observed_at`: the first report of an outcome stands, a later one
cannot move its date.

Reading them back joined to their decisions is `outcome_reads`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from loan_default.services.decisions.codec import time_text
from loan_default.services.decisions.errors import OutcomeConflict

#: Unknown items and conflicting decisions named in an answer (the counts stay exact).
MAX_LISTED: Final = 20
#: Staged rows per executemany / COPY: bounds the Python tuples or CSV text held at once.
CHUNK: Final = 100_000
#: The session-private staging table (SQLite's temp schema; PostgreSQL's, dropped at commit).
STAGE: Final = "outcomes_stage"
#: A canonical (lower-case) version 7 or 8 decision id, as `ids.valid_decision_id` checks it.
_ID_RE: Final = r"^[0-9a-f]{8}-[0-9a-f]{4}-[78][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
_NIBBLE: Final = np.zeros(256, np.int64)
_NIBBLE[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_NIBBLE[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_MS_HEX_AT: Final = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12])
_MS_SHIFT: Final = np.arange(44, -1, -4, dtype=np.int64)
_ZERO_ID: Final = "00000000-0000-0000-0000-000000000000"
_TS: Final = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One reported outcome: exactly one of `decision_id` and `reference` names the decision."""

    defaulted: bool
    observed_at: datetime
    decision_id: str | None = None
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class OutcomeColumns:
    """Outcomes as columns (the CSV path: a million rows without a million objects).

    `observed_at` is `datetime64[us]` holding UTC; per row exactly one of `decision_ids[i]` and
    `references[i]` is set."""

    decision_ids: Sequence[str | None]
    references: Sequence[str | None]
    defaulted: npt.NDArray[np.bool_]
    observed_at: npt.NDArray[np.datetime64]

    def __post_init__(self) -> None:
        n = len(self.defaulted)
        if not len(self.decision_ids) == len(self.references) == len(self.observed_at) == n:
            raise ValueError("outcome columns must have the same length")

    def __len__(self) -> int:
        return len(self.defaulted)

    @classmethod
    def from_items(cls, items: Sequence[Outcome]) -> OutcomeColumns:
        for item in items:
            if item.observed_at.tzinfo is None:
                raise ValueError("observed_at must be timezone-aware")
        return cls(
            decision_ids=[i.decision_id for i in items],
            references=[i.reference for i in items],
            defaulted=np.array([i.defaulted for i in items], dtype=np.bool_),
            observed_at=np.array(
                [i.observed_at.astimezone(UTC).replace(tzinfo=None) for i in items],
                dtype="datetime64[us]",
            ),
        )


@dataclass(frozen=True, slots=True)
class OutcomeResult:
    """What a recorded request did: every item is exactly one of inserted, unchanged, unknown."""

    received: int
    inserted: int
    unchanged: int
    unknown: int
    unknown_items: tuple[str, ...]
    """The first MAX_LISTED unknown items as sent (their decision id or reference)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "inserted": self.inserted,
            "unchanged": self.unchanged,
            "unknown": self.unknown,
            "unknown_items": list(self.unknown_items),
        }


# --- ids as columns ---------------------------------------------------------------------------
def _canonical_ids(values: Sequence[str | None]) -> pa.Array:
    """The values that are decision ids, lower-cased; null for the others."""
    text = pc.utf8_lower(pa.array(values, pa.string()))
    ok = pc.fill_null(pc.match_substring_regex(text, _ID_RE), False)
    return pc.if_else(ok, text, pa.scalar(None, pa.string()))


def id_millis(ids: pa.Array) -> npt.NDArray[np.int64]:
    """The Unix millisecond each canonical id begins with (0 for a null), vectorised: the same
    value `ids.decided_at_of` reads, which is the decision's `decided_at`."""
    n = len(ids)
    if n == 0:
        return np.zeros(0, np.int64)
    filled = pc.fill_null(ids, _ZERO_ID).cast(pa.string())
    offsets = np.frombuffer(filled.buffers()[1], np.int32)[filled.offset : filled.offset + n + 1]
    text = np.frombuffer(filled.buffers()[2], np.uint8)[offsets[0] : offsets[-1]].reshape(n, 36)
    return np.asarray((_NIBBLE[text[:, _MS_HEX_AT]] << _MS_SHIFT).sum(axis=1), dtype=np.int64)


def _stage_table(columns: OutcomeColumns) -> pa.Table:
    ids = _canonical_ids(columns.decision_ids)
    decided = pa.array(id_millis(ids) * 1000, _TS, mask=pc.is_null(ids).to_numpy(False))
    references = pa.array(columns.references, pa.string())
    if pc.any(
        pc.invert(
            pc.xor(
                pc.is_valid(pa.array(columns.decision_ids, pa.string())), pc.is_valid(references)
            )
        )
    ).as_py():
        raise ValueError("each outcome names exactly one of decision_id and reference")
    return pa.table(
        {
            "pos": pa.array(np.arange(len(columns), dtype=np.int32)),
            "decision_id": ids,
            "decided_at": decided,
            "reference": references,
            "defaulted": pa.array(np.asarray(columns.defaulted, dtype=np.bool_)),
            "observed_at": pa.array(
                np.asarray(columns.observed_at, dtype="datetime64[us]").astype(np.int64), _TS
            ),
        }
    )


# --- recording --------------------------------------------------------------------------------
_CREATE_SQLITE: Final = (
    f"CREATE TEMP TABLE {STAGE} (pos INTEGER NOT NULL, decision_id VARCHAR(36), "
    "decided_at DATETIME, reference VARCHAR(64), defaulted BOOLEAN NOT NULL, "
    "observed_at DATETIME NOT NULL, known BOOLEAN NOT NULL DEFAULT FALSE)"
)
_CREATE_PG: Final = (
    f"CREATE TEMP TABLE {STAGE} (pos int4 NOT NULL, decision_id uuid, decided_at timestamptz, "
    "reference text, defaulted boolean NOT NULL, observed_at timestamptz NOT NULL, "
    "known boolean NOT NULL DEFAULT false) ON COMMIT DROP"
)
_STAGE_COLUMNS: Final = "pos, decision_id, decided_at, reference, defaulted, observed_at"
# The statements name the staging table literally (STAGE); every value is bound.
_KNOWN_IDS: Final = (
    "UPDATE outcomes_stage SET known = TRUE WHERE decision_id IS NOT NULL AND EXISTS ("
    "SELECT 1 FROM decisions d WHERE d.decision_id = outcomes_stage.decision_id "
    "AND d.decided_at = outcomes_stage.decided_at)"
)
_RESOLVE_REFERENCES: Final = (
    "UPDATE outcomes_stage SET decision_id = (SELECT d.decision_id FROM decisions d "
    "WHERE d.reference = outcomes_stage.reference ORDER BY d.decision_id DESC LIMIT 1) "
    "WHERE reference IS NOT NULL"
)
_KNOWN_REFERENCES: Final = (
    "UPDATE outcomes_stage SET known = TRUE WHERE reference IS NOT NULL AND decision_id IS NOT NULL"
)
_COUNTS: Final = (
    "SELECT count(*), coalesce(sum(CASE WHEN known THEN 1 ELSE 0 END), 0) FROM outcomes_stage"
)
_UNKNOWN: Final = "SELECT pos FROM outcomes_stage WHERE NOT known ORDER BY pos LIMIT :n"
_INSERT: Final = (
    "INSERT INTO outcomes (decision_id, defaulted, observed_at, received_at, key_id) "
    "SELECT decision_id, defaulted, observed_at, :received_at, :key_id FROM outcomes_stage "
    "WHERE known ORDER BY decision_id, pos ON CONFLICT (decision_id) DO NOTHING"
)
_CONFLICTS: Final = (
    "SELECT s.decision_id, min(s.pos) AS first, count(*) OVER () AS n "
    "FROM outcomes_stage s JOIN outcomes o ON o.decision_id = s.decision_id "
    "WHERE s.known AND o.defaulted <> s.defaulted GROUP BY s.decision_id "
    "ORDER BY first LIMIT :n"
)


def record_outcomes(
    engine: Engine, columns: OutcomeColumns, *, key_id: str, now: datetime | None = None
) -> OutcomeResult:
    """Record `columns` for uploader `key_id` atomically (module docstring); raise
    `OutcomeConflict` naming the first conflicting decisions and write nothing when any item
    contradicts a recorded outcome or another item."""
    n = len(columns)
    if n == 0:
        return OutcomeResult(0, 0, 0, 0, ())
    staged = _stage_table(columns)
    received_at = time_text(engine.dialect.name)(now or datetime.now(UTC))
    params = {"received_at": received_at, "key_id": key_id}
    if engine.dialect.name == "sqlite":
        result = _record_sqlite(engine, staged, params)
    else:
        result = _record_pg(engine, staged, params)
    total, known, inserted, unknown_pos = result
    return OutcomeResult(
        received=total,
        inserted=inserted,
        unchanged=known - inserted,
        unknown=total - known,
        unknown_items=tuple(_as_sent(columns, p) for p in unknown_pos),
    )


def _as_sent(columns: OutcomeColumns, pos: int) -> str:
    value = columns.decision_ids[pos]
    return str(value if value is not None else columns.references[pos])


_Recorded = tuple[int, int, int, list[int]]


def _resolve(conn: Connection) -> tuple[int, int, list[int]]:
    conn.exec_driver_sql(_KNOWN_IDS)
    conn.exec_driver_sql(_RESOLVE_REFERENCES)
    conn.exec_driver_sql(_KNOWN_REFERENCES)
    total, known = conn.exec_driver_sql(_COUNTS).one()
    unknown = [int(p) for p in conn.execute(sa.text(_UNKNOWN), {"n": MAX_LISTED}).scalars()]
    return int(total), int(known), unknown


def _insert_or_refuse(conn: Connection, params: dict[str, str]) -> int:
    """The insert, then the conflict join; raises (so the caller rolls back) on a conflict."""
    inserted = conn.execute(sa.text(_INSERT), params).rowcount
    found = conn.execute(sa.text(_CONFLICTS), {"n": MAX_LISTED}).all()
    if found:
        ids = [str(row[0]) for row in found]
        count = int(found[0][2])
        raise OutcomeConflict(
            f"{count} decision(s) already have a different outcome, or are given two in this "
            f"request (first: {', '.join(ids[:3])}); nothing was recorded",
            detail={"conflicts": count, "decision_ids": ids},
        )
    return int(inserted)


def _record_sqlite(engine: Engine, staged: pa.Table, params: dict[str, str]) -> _Recorded:
    stage_rows = _sqlite_rows(staged)
    marks = ", ".join("?" for _ in range(6))
    insert_stage = f"INSERT INTO {STAGE} ({_STAGE_COLUMNS}) VALUES ({marks})"  # noqa: S608  # nosec B608 - constants only
    # autocommit: staging and look-ups take no lock on the store; BEGIN IMMEDIATE below does
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        try:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{STAGE}")
            conn.exec_driver_sql(_CREATE_SQLITE)
            raw = conn.connection.dbapi_connection
            assert raw is not None  # nosec B101 - type narrowing for mypy on an invariant
            cur = raw.cursor()
            try:
                # one transaction of the temporary database alone (no lock on the store);
                # in autocommit each row would be a transaction of its own
                cur.execute("BEGIN")
                for start in range(0, len(stage_rows), CHUNK):
                    cur.executemany(insert_stage, stage_rows[start : start + CHUNK])
                cur.execute("COMMIT")
            finally:
                cur.close()
            total, known, unknown = _resolve(conn)
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                inserted = _insert_or_refuse(conn, params)
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
        finally:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{STAGE}")
    return total, known, inserted, unknown


def _sqlite_rows(staged: pa.Table) -> list[tuple[Any, ...]]:
    """Staged columns as driver tuples, times in the text form `UTCDateTime` stores on SQLite."""

    def text(name: str) -> list[str | None]:
        plain = staged.column(name).cast(pa.timestamp("us"))
        return list(pc.cast(plain, pa.string()).to_pylist())

    return list(
        zip(
            staged.column("pos").to_pylist(),
            staged.column("decision_id").to_pylist(),
            text("decided_at"),
            staged.column("reference").to_pylist(),
            staged.column("defaulted").cast(pa.int8()).to_pylist(),
            text("observed_at"),
            strict=True,
        )
    )


def _record_pg(engine: Engine, staged: pa.Table, params: dict[str, str]) -> _Recorded:
    copy = f"COPY {STAGE} ({_STAGE_COLUMNS}) FROM STDIN WITH (FORMAT csv)"
    with engine.begin() as conn:
        conn.exec_driver_sql(_CREATE_PG)
        raw = conn.connection.dbapi_connection
        assert raw is not None  # nosec B101 - type narrowing for mypy on an invariant
        cur = raw.cursor()
        try:
            for start in range(0, staged.num_rows, CHUNK):
                buf = io.BytesIO()
                pacsv.write_csv(
                    staged.slice(start, CHUNK),
                    buf,
                    pacsv.WriteOptions(include_header=False, quoting_style="needed"),
                )
                buf.seek(0)
                cur.copy_expert(copy, buf)
            cur.execute(f"ANALYZE {STAGE}")  # temporary tables are never auto-analysed
        finally:
            cur.close()
        total, known, unknown = _resolve(conn)
        inserted = _insert_or_refuse(conn, params)  # a conflict raises: begin() rolls back
    return total, known, inserted, unknown
