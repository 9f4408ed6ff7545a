"""Decisions as database rows, and the SQL that writes them idempotently on each dialect.

Writes bypass SQLAlchemy's per-value processing (several microseconds a row): for SQLite and
for PostgreSQL's group commit a record becomes one plain tuple, the time as text and the reason
codes as JSON text; PostgreSQL's bulk path turns whole columns into a binary `COPY` stream
(`pgcopy`). Reads go through the `schema` types; the text formats here are the ones those types
read back: SQLite's fixed-width UTC `YYYY-MM-DD HH:MM:SS.ffffff`, PostgreSQL's ISO 8601.

Every insert is `ON CONFLICT (decision_id, decided_at) DO NOTHING` (not SQLite's `OR IGNORE`,
which would also swallow a NOT NULL failure): writing a decision twice writes it once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from itertools import repeat
from operator import attrgetter
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa  # type: ignore[import-untyped]
from sqlalchemy.engine import Dialect

from loan_default.services.decisions import pgcopy
from loan_default.services.decisions.batches import DecisionBatch
from loan_default.services.decisions.ids import batch_id_bytes
from loan_default.services.decisions.records import DecisionRecord
from loan_default.services.decisions.schema import COLUMNS, TABLE

Row = tuple[Any, ...]
_CONFLICT: Final = "ON CONFLICT (decision_id, decided_at) DO NOTHING"
_TEXT, _F64 = pa.string(), pa.float64()
_TIME = pa.timestamp("us", tz="UTC")
#: Arrow type and PostgreSQL binary type of each column, in COLUMNS order; the rest are text.
_COPY_TYPES: Final[dict[str, tuple[pa.DataType, pgcopy.PgType]]] = {
    "decision_id": (_TEXT, "uuid"),
    "decided_at": (_TIME, "timestamptz"),
    "row": (pa.int32(), "int4"),
    "employed": (_F64, "float8"),
    "bank_balance": (_F64, "float8"),
    "annual_salary": (_F64, "float8"),
    "saving_rate": (_F64, "float8"),
    "probability": (_F64, "float8"),
    "threshold": (_F64, "float8"),
    "prediction": (pa.int16(), "int2"),
    "reason_codes": (_TEXT, "jsonb"),
    "challenger_probability": (_F64, "float8"),
}
_TYPES: Final[tuple[tuple[pa.DataType, pgcopy.PgType], ...]] = tuple(
    _COPY_TYPES.get(c, (_TEXT, "text")) for c in COLUMNS
)
_FIELDS: Final = attrgetter(*COLUMNS)
_REASONS: Final = COLUMNS.index("reason_codes")


def _sqlite_time(at: datetime) -> str:
    return at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _pg_time(at: datetime) -> str:
    return at.isoformat(timespec="microseconds")


def time_text(dialect: str) -> Callable[[datetime], str]:
    return _sqlite_time if dialect == "sqlite" else _pg_time


class _Codes(dict[tuple[str, ...], str]):
    """Reason-code tuples to JSON text; a chunk has few distinct tuples, so each is encoded once."""

    def __missing__(self, key: tuple[str, ...]) -> str:
        text = self[key] = orjson.dumps(key).decode()
        return text


def rows(records: Iterable[DecisionRecord], dialect: str) -> list[Row]:
    """One tuple per record, in `schema.COLUMNS` order, ready for the dialect's driver."""
    fmt = time_text(dialect)
    times: dict[datetime, str] = {}
    codes = _Codes()
    out: list[Row] = []
    append = out.append
    for r in records:
        at = times.get(r.decided_at)
        if at is None:
            at = times[r.decided_at] = fmt(r.decided_at)
        append(
            (
                r.decision_id,
                at,
                r.request_id,
                r.key_id,
                r.reference,
                r.source,
                r.job_id,
                r.row,
                r.employed,
                r.bank_balance,
                r.annual_salary,
                r.saving_rate,
                r.model_name,
                r.model_version,
                r.model_alias,
                r.probability,
                r.threshold,
                r.prediction,
                r.risk_band,
                codes[r.reason_codes],
                r.challenger_version,
                r.challenger_probability,
            )
        )
    return out


def _nullable(values: np.ndarray) -> list[float | None]:
    """Floats with NaN as None (NULL): a batch row the challenger did not sample."""
    return [None if v != v else v for v in values.tolist()]


def _challenger_versions(batch: DecisionBatch) -> list[str | None] | None:
    """Per-row challenger versions when some rows were not sampled (NaN probability: no
    version either, as for a single prediction), else None (the chunk shares one value)."""
    chall = batch.challenger_probability
    if chall is None or batch.challenger_version is None:
        return None
    unsampled = np.isnan(chall)
    if not unsampled.any():
        return None
    return [None if u else batch.challenger_version for u in unsampled.tolist()]


def batch_rows(batch: DecisionBatch, dialect: str) -> list[Row]:
    """`rows` for a columnar batch, built by `zip` without a per-row object."""
    n = len(batch)
    codes = _Codes()
    chall = batch.challenger_probability
    columns: list[Iterable[Any]] = [
        batch.decision_ids(),
        repeat(time_text(dialect)(batch.created_at), n),
        repeat(batch.request_id, n),
        repeat(batch.key_id, n),
        _plain(batch.references) if batch.references is not None else repeat(None, n),
        repeat("batch", n),
        repeat(batch.job_id, n),
        batch.rows.tolist(),
        batch.employed.tolist(),
        batch.bank_balance.tolist(),
        batch.annual_salary.tolist(),
        batch.saving_rate.tolist(),
        repeat(batch.model_name, n),
        repeat(batch.model_version, n),
        repeat(batch.model_alias, n),
        batch.probability.tolist(),
        repeat(float(batch.threshold), n),
        batch.prediction.tolist(),
        _plain(batch.risk_band),
        [codes[tuple(c)] for c in batch.reason_codes],
        _challenger_versions(batch) or repeat(batch.challenger_version, n),
        _nullable(chall) if chall is not None else repeat(None, n),
    ]
    return list(zip(*columns, strict=True))


def _plain(values: Sequence[Any]) -> Sequence[Any]:
    """Python objects for the SQLite driver (a numpy array of str holds numpy scalars)."""
    tolist = getattr(values, "tolist", None)
    return tolist() if tolist is not None else values


def copy_records(records: Sequence[DecisionRecord]) -> pgcopy.CopyStream:
    """The binary COPY stream of `records` (one column at a time, then `pgcopy`)."""
    codes = _Codes()
    columns: list[Any] = [list(col) for col in zip(*map(_FIELDS, records), strict=True)]
    columns[_REASONS] = [codes[c] for c in columns[_REASONS]]
    return pgcopy.stream(
        [
            pgcopy.field(pa.array(col, arrow_type), pg_type)
            for col, (arrow_type, pg_type) in zip(columns, _TYPES, strict=True)
        ]
    )


def copy_batch(batch: DecisionBatch) -> pgcopy.CopyStream:
    """The binary COPY stream of a columnar batch: the ids from the job's id bytes and the row
    numbers, the per-row columns straight from numpy, everything the chunk shares encoded once."""
    n = len(batch)
    ids = np.empty((n, 16), np.uint8)
    ids[:, :12] = np.frombuffer(batch_id_bytes(batch.job_id, batch.created_at)[:12], np.uint8)
    ids[:, 12:] = batch.rows.astype(">u4").view(np.uint8).reshape(n, 4)
    codes = _Codes()
    per_row: dict[str, Any] = {
        "reference": batch.references,
        "row": batch.rows,
        "employed": batch.employed,
        "bank_balance": batch.bank_balance,
        "annual_salary": batch.annual_salary,
        "saving_rate": batch.saving_rate,
        "probability": batch.probability,
        "prediction": batch.prediction,
        "risk_band": batch.risk_band,
        "reason_codes": [codes[tuple(c)] for c in batch.reason_codes],
        "challenger_probability": batch.challenger_probability,
    }
    versions = _challenger_versions(batch)
    if versions is not None:
        per_row["challenger_version"] = versions
    shared: dict[str, Any] = {
        "decided_at": batch.created_at,
        "request_id": batch.request_id,
        "key_id": batch.key_id,
        "source": "batch",
        "job_id": batch.job_id,
        "model_name": batch.model_name,
        "model_version": batch.model_version,
        "model_alias": batch.model_alias,
        "threshold": float(batch.threshold),
    }
    if versions is None:
        shared["challenger_version"] = batch.challenger_version
    fields = [pgcopy.uuid_fields(ids)]
    for name, (arrow_type, pg_type) in zip(COLUMNS[1:], _TYPES[1:], strict=True):
        if name in shared:
            fields.append(pgcopy.constant(shared[name], pg_type, arrow_type, n))
        elif per_row[name] is None:
            fields.append(pa.nulls(n, pa.binary()))
        else:
            # from_pandas: NaN becomes null (a challenger probability of an unsampled row)
            values = pa.array(per_row[name], arrow_type, from_pandas=True)
            fields.append(pgcopy.field(values, pg_type))
    return pgcopy.stream(fields)


@lru_cache(maxsize=8)  # one entry per dialect: built once, not per commit
def column_list(dialect: Dialect) -> str:
    """The quoted column list (`row` is a keyword in both dialects)."""
    quote = dialect.identifier_preparer.quote
    return ", ".join(quote(c) for c in COLUMNS)


@lru_cache(maxsize=8)
def sqlite_insert(dialect: Dialect) -> str:
    marks = ", ".join("?" for _ in COLUMNS)
    # constants and quoted column names only; values are bound
    return f"INSERT INTO {TABLE} ({column_list(dialect)}) VALUES ({marks}) {_CONFLICT}"  # noqa: S608  # nosec B608 - schema identifiers, values bound


#: Rows per multi-row SQLite INSERT: 500 x 21 columns stays far below SQLite's 32,766 bound
#: variables (its default limit since 3.32).
SQLITE_ROWS_PER_INSERT: Final = 500


@lru_cache(maxsize=SQLITE_ROWS_PER_INSERT)
def sqlite_insert_rows(dialect: Dialect, n: int) -> str:
    """`sqlite_insert` for `n` rows in one statement (the group-commit writer's: one step)."""
    row = "(" + ", ".join("?" for _ in COLUMNS) + ")"
    values = ", ".join(row for _ in range(n))
    return f"INSERT INTO {TABLE} ({column_list(dialect)}) VALUES {values} {_CONFLICT}"  # noqa: S608  # nosec B608 - schema identifiers, values bound


@lru_cache(maxsize=8)
def pg_insert_json(dialect: Dialect) -> str:
    """The group-commit writer's PostgreSQL insert: the whole group bound as ONE parameter, a
    JSON array of `rows` tuples, which the server unpacks (`json_array_elements`) and casts to
    each column's type.

    Why not psycopg2's `execute_values`: it quotes every value of every row into the SQL text
    in Python (`mogrify`, ~14 us a row), on the writer thread, holding the GIL the API's event
    loop needs. One orjson call and one quoted string cost a quarter of that (measured on 8-row
    groups: 217 -> 74 us of writer CPU a group). Values round-trip exactly: floats as their
    shortest repr, times as ISO 8601, reason codes as JSON text (tests on PostgreSQL read them
    back). orjson writes a NaN as null, which is what a float column's "no value" is.
    """
    select = ", ".join(f"(e->>{i})::{pg_type}" for i, (_, pg_type) in enumerate(_TYPES))
    return (
        f"INSERT INTO {TABLE} ({column_list(dialect)}) SELECT {select} "  # noqa: S608  # nosec B608 - schema identifiers and types; values bound
        f"FROM json_array_elements(%s::json) AS e {_CONFLICT}"
    )


def json_rows(data: Sequence[Row]) -> str:
    """`rows` as the one parameter of `pg_insert_json`."""
    return orjson.dumps(data).decode()


@lru_cache(maxsize=8)
def pg_copy(dialect: Dialect) -> str:
    return f"COPY {TABLE} ({column_list(dialect)}) FROM STDIN WITH (FORMAT binary)"


#: The idempotent bulk path: COPY into a session-private table (not WAL-logged, dropped at
#: commit), then one INSERT ... SELECT ... ON CONFLICT DO NOTHING.
STAGE: Final = "decisions_stage"


@lru_cache(maxsize=8)
def pg_staged(dialect: Dialect) -> tuple[str, str, str]:
    cols = column_list(dialect)
    return (
        f"CREATE TEMP TABLE {STAGE} (LIKE {TABLE}) ON COMMIT DROP",
        f"COPY {STAGE} ({cols}) FROM STDIN WITH (FORMAT binary)",
        f"INSERT INTO {TABLE} ({cols}) SELECT {cols} FROM {STAGE} {_CONFLICT}",  # noqa: S608  # nosec B608 - schema identifiers
    )
